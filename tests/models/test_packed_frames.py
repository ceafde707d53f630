"""A padded batch in training runs its Transformer layers on the real frames only: the same outputs at those
frames and the same gradients as the padded computation, whichever of its branches a layer takes."""

from __future__ import annotations

import pytest
import torch

from w2v2.models.config import Wav2Vec2Config
from w2v2.models import transformer
from w2v2.models.transformer import PackedLayerResults, TransformerEncoder

from tests.models.conftest import TINY

LENGTHS = (13, 7, 10)  # frames; required_seq_len_multiple 2 pads 13 to 14 as well


def _encoder(**keys) -> TransformerEncoder:
    torch.manual_seed(0)
    cfg = Wav2Vec2Config.from_dict({**TINY, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
                                    "encoder_layerdrop": 0.0, **keys})
    encoder = TransformerEncoder(cfg).train()
    with torch.no_grad():  # layer norms away from the defaults, so that a mixed-up frame shows
        for name, p in encoder.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.rand_like(p) * 0.5)
    return encoder


def _batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    frames = max(LENGTHS)
    x = torch.randn(len(LENGTHS), frames, TINY["encoder_embed_dim"], generator=generator)
    padding = torch.arange(frames)[None, :] >= torch.tensor(LENGTHS)[:, None]
    return x, padding


def _padded_run(encoder: TransformerEncoder, x, padding):
    """The padded computation, forced: what the encoder ran before it packed."""
    encoder._packs = lambda *args: False  # type: ignore[method-assign]
    try:
        return encoder(x, padding)
    finally:
        del encoder._packs


def _loss(out: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 2.0, out.size(-1))
    return (out[keep] * weights).square().sum()


@pytest.mark.parametrize("layer_norm_first", [False, True])
@pytest.mark.parametrize("attention_dropout", [0.0, 0.2])
def test_packed_layers_give_the_padded_outputs_and_gradients(layer_norm_first, attention_dropout, monkeypatch):
    if attention_dropout:
        # the CPU's own attention, which attention dropout takes, with dropout's masks all ones: both runs
        # draw their masks over different shapes, so only then can their values be compared
        monkeypatch.setattr(transformer, "dropout", lambda x, p, training: x)
    encoder = _encoder(layer_norm_first=layer_norm_first, attention_dropout=attention_dropout)
    x, padding = _batch()
    keep = ~padding
    x_padded = x.clone().requires_grad_()
    x_packed = x.clone().requires_grad_()
    reference, ref_results = _padded_run(encoder, x_padded, padding)
    _loss(reference, keep).backward()
    ref_grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
    encoder.zero_grad()
    out, results = encoder(x_packed, padding)
    assert isinstance(results, PackedLayerResults) and len(results) == len(ref_results)
    assert out.shape == reference.shape and not out[padding].any()
    torch.testing.assert_close(out[keep], reference[keep], rtol=1e-5, atol=1e-5)
    for (a, b), (ref_a, ref_b) in zip(results, ref_results):
        assert a.shape == ref_a.shape
        torch.testing.assert_close(a.transpose(0, 1)[keep], ref_a.transpose(0, 1)[keep], rtol=1e-5, atol=1e-5)
        assert b is None and ref_b is None  # no FFN outputs kept in training with gradients
    _loss(out, keep).backward()
    for name, p in encoder.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(x_packed.grad, x_padded.grad, rtol=1e-4, atol=1e-6)


def test_attention_stays_within_each_utterance():
    encoder = _encoder()
    x, padding = _batch()
    first, _ = encoder(x, padding)
    changed = x.clone()
    changed[1] += 5.0  # another utterance entirely, valid frames and padding alike
    second, _ = encoder(changed, padding)
    for row in (0, 2):
        torch.testing.assert_close(second[row, : LENGTHS[row]], first[row, : LENGTHS[row]])
    assert not torch.allclose(second[1, : LENGTHS[1]], first[1, : LENGTHS[1]])


def test_packing_only_in_training_with_padding_and_gradients():
    encoder = _encoder()
    x, padding = _batch()
    assert isinstance(encoder(x, padding)[1], PackedLayerResults)
    assert isinstance(encoder(x, padding, layer=0)[1], list)
    assert isinstance(encoder(x[:, :12], torch.zeros(3, 12, dtype=torch.bool))[1], list)
    with torch.no_grad():
        assert isinstance(encoder(x, padding)[1], list)
    encoder.eval()
    assert isinstance(encoder(x, padding)[1], list)


def test_packing_only_on_the_cpu():
    # meta tensors stand for an accelerator's: no data, so packing's host sync would fail on them
    encoder = _encoder().to("meta")
    x, padding = _batch()
    out, results = encoder(x.to("meta"), padding.to("meta"))
    assert isinstance(results, list) and out.shape == x.shape


def test_packed_results_read_as_a_sequence():
    encoder = _encoder()
    x, padding = _batch()
    _, results = encoder(x, padding)
    assert len(results[-1]) == 2 and results[-1][0].shape == (max(LENGTHS), len(LENGTHS), TINY["encoder_embed_dim"])
    assert [a.shape for a, _ in results] == [a.shape for a, _ in results[:]]
    assert not results[0][0].transpose(0, 1)[padding].any()


def test_checkpointed_packed_layers_match_the_unchecked_ones():
    x, padding = _batch()
    keep = ~padding
    outs, grads = [], []
    for checkpointed in (False, True):
        encoder = _encoder(checkpoint_activations=checkpointed)
        out, _ = encoder(x, padding)
        _loss(out, keep).backward()
        outs.append(out)
        grads.append([p.grad for p in encoder.parameters()])
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_ffn_outputs_kept_only_without_gradients_or_out_of_training():
    """fairseq's layer results pair each output with its FFN output; a training forward with gradients keeps
    none (the step's memory peak), while evaluation and no-grad forwards, where they are read, keep them."""
    encoder = _encoder()
    x, padding = _batch()
    for kept_padding in (padding, None):
        _, results = encoder(x, kept_padding)
        assert all(ffn is None for _, ffn in results)
    with torch.no_grad():
        _, training_no_grad = encoder(x, padding)
    encoder.eval()
    _, evaluation = encoder(x, padding)
    assert len(training_no_grad) == len(evaluation) == TINY["encoder_layers"]
    for (x_a, ffn_a), (x_b, ffn_b) in zip(training_no_grad, evaluation):
        assert ffn_a is not None and ffn_a.shape == x_a.shape
        torch.testing.assert_close(ffn_a, ffn_b)  # no dropout in this encoder: train and eval agree
