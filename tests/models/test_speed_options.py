"""The speed work keeps behaviour: activation checkpointing, the fused QKV projection, the frozen CNN."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from w2v2.models import transformer
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.feature_encoder import ConvFeatureExtractionModel, _normed_first_two_blocks
from w2v2.models.transformer import MultiheadAttention
from w2v2.models.wav2vec2 import Wav2Vec2Model
from tests.models.conftest import TINY, allocation_peak

# the CNN frozen, so that what the Transformer layers keep dominates the count
DROPOUTS = dict(dropout=0.2, attention_dropout=0.2, activation_dropout=0.2, feature_grad_mult=0.0)


def _saved_tensors_and_grads(checkpointed: bool) -> tuple:
    """Tensors autograd keeps for backward during the forward, and the gradients, of a seeded training step."""
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict({**TINY, **DROPOUTS, "checkpoint_activations": checkpointed}))
    model.train()
    source = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    saved: List[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        x = model(source, mask=False, features_only=True)["x"]
    x.pow(2).sum().backward()
    return sum(saved), x.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_checkpoint_activations_keeps_less_for_backward_with_the_same_outputs_and_gradients():
    plain_saved, plain_x, plain_grads = _saved_tensors_and_grads(False)
    ckpt_saved, ckpt_x, ckpt_grads = _saved_tensors_and_grads(True)
    assert ckpt_saved < 0.7 * plain_saved
    # dropout is on: equal gradients mean the recomputation replayed the same dropout masks
    assert torch.equal(plain_x, ckpt_x)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, ckpt_grads[name], rtol=1e-5, atol=1e-7), name


def test_finetuning_checkpoint_activations_replaces_the_pretrained_value():
    for pretrained, finetuning in ((False, True), (True, False)):
        cfg = Wav2Vec2CtcConfig.from_dict({"checkpoint_activations": finetuning})
        model = Wav2Vec2Ctc(cfg, Wav2Vec2Config.from_dict({**TINY, "checkpoint_activations": pretrained}), 12)
        assert model.w2v_encoder.w2v_model.encoder.checkpoint_activations is finetuning


def test_fused_qkv_projection_equals_three_projections_and_keeps_fairseq_names():
    torch.manual_seed(0)
    attention = MultiheadAttention(32, 4, dropout=0.0).eval()
    assert [name for name, _ in attention.named_parameters()] == [
        f"{p}_proj.{w}" for p in ("k", "v", "q", "out") for w in ("weight", "bias")]
    x = torch.randn(7, 2, 32)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(7, 2, 4, 8).permute(1, 2, 0, 3)

    q, k, v = (heads(getattr(attention, f"{n}_proj")(x)) for n in "qkv")
    scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    expected = attention.out_proj((F.softmax(scores, -1) @ v).permute(2, 0, 1, 3).reshape(7, 2, 32))
    with torch.no_grad():
        assert torch.allclose(attention(x, padding), expected, atol=1e-6)


def test_frozen_feature_encoder_keeps_no_autograd_state():
    cfg = Wav2Vec2CtcConfig.from_dict({"feature_grad_mult": 0.0})
    model = Wav2Vec2Ctc(cfg, Wav2Vec2Config.from_dict(TINY), 12).train()
    seen: Dict[str, bool] = {}
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    extractor.register_forward_hook(lambda m, args, out: seen.update(graph=out.grad_fn is not None))
    model(torch.randn(2, 8000))["encoder_out"].sum().backward()
    assert seen == {"graph": False}
    assert all(p.grad is None for p in extractor.parameters())
    assert model.w2v_encoder.proj.weight.grad is not None


def test_attention_dropout_path_equals_sdpa_with_the_same_kept_weights(monkeypatch):
    """The CPU path with dropout: with a known dropout mask, the attention weights times that mask; with
    nothing dropped, SDPA's attention."""
    torch.manual_seed(0)
    attention = MultiheadAttention(32, 4, dropout=0.3).train()
    x = torch.randn(9, 2, 32)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[0, 6:] = True
    weight = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
    bias = torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias])
    q, k, v = (t.view(9, 2, 4, 8).permute(1, 2, 0, 3) for t in F.linear(x, weight, bias).chunk(3, dim=-1))
    keep = torch.rand(2, 4, 9, 9, generator=torch.Generator().manual_seed(3)) > 0.3
    monkeypatch.setattr(transformer, "dropout", lambda probs, p, training: probs * keep / (1 - p))
    ours = attention(x, padding)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5 + torch.where(padding, -torch.inf, 0.0)[:, None, None, :], -1)
    expected = attention.out_proj((probs * keep / 0.7 @ v).permute(2, 0, 1, 3).reshape(9, 2, 32))
    assert torch.allclose(ours, expected, atol=1e-6)
    monkeypatch.setattr(transformer, "dropout", lambda probs, p, training: probs)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    assert torch.allclose(attention(x, padding), attention.out_proj(sdpa.permute(2, 0, 1, 3).reshape(9, 2, 32)), atol=1e-6)


def test_contrastive_logits_equal_torch_cosine_similarity_with_the_same_gradients():
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(TINY))
    x = torch.randn(2, 5, 16, requires_grad=True)
    y = torch.randn(2, 5, 16, requires_grad=True)
    negatives = torch.randn(3, 2, 5, 16, requires_grad=True)
    ours = model.compute_preds(x, y, negatives)
    ours.pow(2).sum().backward()
    ours_grads = [t.grad.clone() for t in (x, y, negatives)]
    for t in (x, y, negatives):
        t.grad = None
    expected = torch.cosine_similarity(x, torch.cat([y.unsqueeze(0), negatives]), dim=-1) / model.cfg.logit_temp
    expected.pow(2).sum().backward()
    assert torch.allclose(ours, expected, atol=1e-6)
    for mine, theirs in zip(ours_grads, (x.grad, y.grad, negatives.grad)):
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_quantizer_codebook_lookup_equals_fairseqs_broadcast_sum():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(TINY))
    quantizer = model.quantizer
    features = torch.randn(2, 6, 16)
    for training in (True, False):
        quantizer.train(training)
        torch.manual_seed(3)
        out = quantizer(features)["x"]
        out.pow(2).sum().backward()
        grad = quantizer.vars.grad.clone()
        quantizer.vars.grad = None
        torch.manual_seed(3)  # the same Gumbel noise
        logits = quantizer.weight_proj(features.reshape(-1, 16)).view(2 * 6 * 2, -1)
        onehot = F.gumbel_softmax(logits, tau=quantizer.curr_temp, hard=True) if training else \
            torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        expected = (onehot.reshape(12, -1).unsqueeze(-1) * quantizer.vars).view(12, 2, 10, -1).sum(-2).view(2, 6, -1)
        expected.pow(2).sum().backward()
        assert torch.equal(out, expected)
        assert torch.allclose(grad, quantizer.vars.grad, atol=1e-6)
        quantizer.vars.grad = None



def test_frozen_feature_encoder_runs_in_stretches_with_the_values_of_the_autograd_path():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict({**TINY, "conv_bias": True}))
    extractor = model.feature_extractor
    first, second = extractor.conv_layers[0], extractor.conv_layers[1]
    with torch.no_grad():  # a norm that is not the identity
        first[2].weight.uniform_(0.5, 1.5)
        first[2].bias.normal_()
    source = torch.randn(3, 8001)
    with_grad = extractor(source)
    assert with_grad.requires_grad
    expected = second(first(source.unsqueeze(1))).detach()
    # The statistics come from a conv of one utterance, which oneDNN rounds like the batch's conv on some CPUs
    # but not on others (AVX2 here, by a few ulps): the tolerance is that, and far below any real mistake.
    ulps = dict(rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        # stretches of 7 frames (the last one shorter), channel blocks of 8 for the statistics; one stretch
        for frames, channels in ((7, 8), (3, 16), (10 ** 6, 128)):
            stretched = _normed_first_two_blocks(source, first, second, frames=frames, channels=channels)
            torch.testing.assert_close(stretched, expected, **ulps, msg=f"{(frames, channels)}")
        # blocks of 5, 5, 5, 1: mkldnn rounds such a conv differently, by an ulp of the statistics
        odd = _normed_first_two_blocks(source, first, second, frames=7, channels=5)
        assert torch.allclose(odd, expected, rtol=1e-5, atol=1e-5)
        frozen = extractor(source)
    torch.testing.assert_close(frozen, with_grad.detach(), rtol=1e-5, atol=1e-5)  # the fixtures' tolerance


def test_frozen_feature_encoder_never_holds_the_first_blocks_whole_output(tmp_path):
    torch.manual_seed(0)
    extractor = ConvFeatureExtractionModel([(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2)
    source = torch.randn(4, 160000)
    first_output = 4 * 64 * (160000 // 5) * 4  # bytes of the group-norm block's output for the batch
    with torch.no_grad():
        frozen = allocation_peak(lambda: extractor(source), tmp_path)
    with_grad = allocation_peak(lambda: extractor(source), tmp_path)
    assert with_grad > 2 * first_output  # the first block's conv, norm and GELU outputs, kept for backward
    assert frozen < first_output
