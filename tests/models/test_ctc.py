"""Fine-tuning model: overrides, freezing, blank forcing."""

from __future__ import annotations

import torch

from w2v2.models.config import Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc


def build(tiny_cfg, **overrides) -> Wav2Vec2Ctc:
    cfg = Wav2Vec2CtcConfig.from_dict(dict(apply_mask=True, mask_prob=0.3, mask_channel_prob=0.2,
                                           mask_channel_length=4, layerdrop=0.0, **overrides))
    return Wav2Vec2Ctc(cfg, tiny_cfg, 12)


def test_finetuning_values_override_the_pretrained_config(tiny_cfg):
    tiny_cfg.dropout = 0.3
    tiny_cfg.mask_prob = 0.65
    model = build(tiny_cfg, dropout=0.0, final_dropout=0.2)
    inner = model.w2v_encoder.w2v_model
    assert inner.cfg.mask_prob == 0.3 and inner.cfg.dropout == 0.0 and inner.cfg.mask_channel_prob == 0.2
    assert inner.quantizer is None and inner.final_proj is None and inner.project_q is None
    assert not any(k.startswith(("w2v_encoder.w2v_model.quantizer", "w2v_encoder.w2v_model.final_proj"))
                   for k in model.state_dict())


def test_freeze_finetune_updates(tiny_cfg):
    model = build(tiny_cfg, freeze_finetune_updates=5).train()
    source = torch.randn(2, 6000)
    for updates, pretrained_trains in ((0, False), (4, False), (5, True)):
        model.zero_grad(set_to_none=True)
        model.set_num_updates(updates)
        model(source)["encoder_out"].sum().backward()
        assert model.w2v_encoder.proj.weight.grad is not None
        grad = model.w2v_encoder.w2v_model.encoder.layers[0].fc1.weight.grad
        assert (grad is not None) == pretrained_trains, updates


def test_padded_frames_are_forced_to_blank(tiny_cfg):
    model = build(tiny_cfg).eval()
    source = torch.randn(2, 6000)
    padding = torch.zeros(2, 6000, dtype=torch.bool)
    padding[1, 3000:] = True
    with torch.no_grad():
        out = model(source, padding)
        lprobs = model.get_normalized_probs(out)
    frames = out["padding_mask"][1]
    assert frames.any()
    assert torch.equal(lprobs[frames.nonzero()[:, 0], 1].argmax(-1), torch.zeros(int(frames.sum()), dtype=torch.long))
    assert torch.isinf(lprobs[frames.nonzero()[:, 0], 1, 1:]).all()
    assert torch.isfinite(lprobs[:, 0]).all()


def test_masking_applies_only_in_training(tiny_cfg):
    model = build(tiny_cfg)
    source = torch.randn(1, 6000)
    with torch.no_grad():
        a, b = model.eval()(source)["encoder_out"], model(source)["encoder_out"]
        torch.manual_seed(0)
        c = model.train()(source)["encoder_out"]
    assert torch.equal(a, b) and not torch.allclose(a, c)
