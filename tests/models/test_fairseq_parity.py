"""Our models against arrays computed by fairseq itself on the same tiny checkpoints."""

from __future__ import annotations

import pytest
import torch

import w2v2
from w2v2.train.losses import contrastive_loss, ctc_loss

RTOL = 1e-5


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, name: str) -> None:
    """Max abs difference within RTOL of the reference's magnitude; -inf entries must agree."""
    ours, theirs = ours.detach().float(), theirs.float()
    assert ours.shape == theirs.shape, name
    finite = torch.isfinite(theirs)
    assert torch.equal(finite, torch.isfinite(ours)), f"{name}: infinities differ"
    scale = theirs[finite].abs().max().clamp_min(1e-12)
    error = (ours[finite] - theirs[finite]).abs().max() / scale
    assert error <= RTOL, f"{name}: relative error {error:.2e}"


@pytest.fixture(scope="module", params=["pretrain_init.pt", "args_era_pretrain.pt"])
def pretrained(request, fairseq_dir):
    return w2v2.load_model(fairseq_dir / request.param)


def test_feature_encoder(pretrained, pretrain_outputs):
    with torch.no_grad():
        assert_close(pretrained.feature_extractor(pretrain_outputs["source"]), pretrain_outputs["conv_features"], "conv")


def test_features_only_and_layer_results(pretrained, pretrain_outputs):
    with torch.no_grad():
        out = pretrained(pretrain_outputs["source"], mask=False, features_only=True)
    assert_close(out["x"], pretrain_outputs["fo_x"], "x")
    assert_close(out["features"], pretrain_outputs["fo_features"], "features")
    assert out["padding_mask"] is None
    for i, (x, ffn) in enumerate(out["layer_results"]):
        assert_close(x, pretrain_outputs[f"fo_layer{i}_x"], f"layer{i}.x")
        assert_close(ffn, pretrain_outputs[f"fo_layer{i}_ffn"], f"layer{i}.ffn")


def test_padded_batch_and_group_norm_padding_effect(pretrained, pretrain_outputs):
    o = pretrain_outputs
    with torch.no_grad():
        padded = pretrained(o["source_padded"], padding_mask=o["padding_mask_in"], mask=False, features_only=True)
        single = pretrained(o["source_padded"][1:, :12000], mask=False, features_only=True)
    assert torch.equal(padded["padding_mask"], o["fo_pad_padding_mask"])
    assert_close(padded["x"], o["fo_pad_x"], "padded x")
    assert_close(single["x"], o["fo_single1_x"], "single x")
    # The group norm sees the padding, so the padded row differs from the lone utterance, as in fairseq.
    assert (padded["x"][1, :37] - single["x"][0]).abs().max() > 0.1


def test_quantizer_outputs(pretrained, pretrain_outputs):
    with torch.no_grad():
        vectors, codes = pretrained.quantize(pretrain_outputs["source"])
    assert_close(vectors, pretrain_outputs["quantize_x"], "quantize_x")
    assert torch.equal(codes, pretrain_outputs["quantize_targets"])


def test_pretraining_forward_loss_and_gradients(pretrained, pretrain_outputs):
    o = pretrain_outputs
    pretrained.zero_grad()
    out = pretrained(o["source"], mask_indices=o["mask_indices"], negative_indices=o["pt_neg_idxs"])
    assert_close(out["x"], o["pt_logits"], "logits")
    for key in ("features_pen", "prob_perplexity", "code_perplexity"):
        assert_close(out[key], o[f"pt_{key}"], key)
    assert out["num_vars"] == o["pt_num_vars"] and out["temp"] == o["pt_temp"]
    result = contrastive_loss(pretrained, out, (0.1, 10.0), nsentences=2)
    assert result.sample_size == o["sample_size"]
    assert_close(result.loss, o["loss"], "loss")
    for key in ("loss_0", "loss_1", "loss_2", "correct", "count", "prob_perplexity", "code_perplexity"):
        assert result.logs[key] == pytest.approx(o[f"log_{key}"], rel=RTOL), key
    result.loss.backward()
    check_gradients(pretrained, o)


def check_gradients(model: torch.nn.Module, reference: dict) -> None:
    """Every gradient fairseq computed, within RTOL of the whole model's largest gradient entry."""
    names = [n for n in reference if n.startswith("grad.")]
    assert names
    params = dict(model.named_parameters())
    for name in names:
        grad = params[name[len("grad."):]].grad
        assert grad is not None, name
        theirs = reference[name]
        # Key-projection biases have a true gradient of zero (softmax ignores a per-query constant);
        # fairseq's values there are rounding noise near 1e-9, so compare against 1e-3 instead.
        scale = max(theirs.abs().max().item(), 1e-3)
        assert (grad - theirs).abs().max().item() <= RTOL * scale, name


@pytest.fixture(scope="module")
def ctc_model(fairseq_dir):
    model = w2v2.load_model(fairseq_dir / "ctc_init.pt")
    model.set_num_updates(10)
    return model


def test_ctc_outputs_loss_decoding_and_gradients(ctc_model, ctc_outputs):
    o = ctc_outputs
    assert ctc_model.dictionary.symbols == o["dict_symbols"]
    ctc_model.zero_grad()
    out = ctc_model(o["source_padded"], o["padding_mask_in"])
    assert_close(out["encoder_out"], o["encoder_out"], "encoder_out")
    assert torch.equal(out["padding_mask"], o["encoder_padding_mask"])
    assert_close(ctc_model.get_normalized_probs(out), o["lprobs"], "lprobs")
    result = ctc_loss(ctc_model, out, o["target"], ctc_model.dictionary, target_lengths=o["target_lengths"])
    assert_close(result.loss, o["loss"], "ctc loss")
    assert result.sample_size == o["sample_size"]
    for key in ("c_errors", "c_total", "w_errors", "wv_errors", "w_total", "ntokens"):
        assert result.logs[key] == o[f"log_{key}"], key
    assert result.logs["hypotheses"] == o["greedy_hyps"]
    result.loss.backward()
    check_gradients(ctc_model, o)
    assert ctc_model.w2v_encoder.w2v_model.feature_extractor.conv_layers[0][0].weight.grad is None


def test_ctc_unpadded_logits(ctc_model, ctc_outputs, pretrain_outputs):
    # The CTC fixtures were made from the same waveforms as the pretraining ones.
    assert torch.equal(ctc_outputs["source_padded"], pretrain_outputs["source_padded"])
    with torch.no_grad():
        out = ctc_model(pretrain_outputs["source"])
    assert out["padding_mask"] is None
    assert_close(out["encoder_out"], ctc_outputs["encoder_out_nopad"], "encoder_out_nopad")
