"""Pretraining model behaviour beyond the fixtures: LayerDrop, padding invariance, feature gradients."""

from __future__ import annotations

import torch

from w2v2.models.config import Wav2Vec2Config
from w2v2.models.wav2vec2 import Wav2Vec2Model
from tests.models.conftest import TINY


def test_layer_norm_mode_is_invariant_to_padding():
    torch.manual_seed(0)
    cfg = Wav2Vec2Config.from_dict(dict(TINY, extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True))
    model = Wav2Vec2Model(cfg).eval()
    long, short = torch.randn(1, 8000), torch.randn(1, 5000)
    batch = torch.zeros(2, 8000)
    batch[0], batch[1, :5000] = long[0], short[0]
    padding = torch.zeros(2, 8000, dtype=torch.bool)
    padding[1, 5000:] = True
    with torch.no_grad():
        padded = model(batch, padding, mask=False, features_only=True)
        alone = model(short, mask=False, features_only=True)
    frames = alone["x"].size(1)
    assert padded["padding_mask"][1, :frames].logical_not().all() and padded["padding_mask"][1, frames:].all()
    assert torch.allclose(padded["x"][1, :frames], alone["x"][0], atol=1e-5)
    assert not cfg.conv_bias or "feature_extractor.conv_layers.0.0.bias" in model.state_dict()
    assert "feature_extractor.conv_layers.3.2.1.weight" in model.state_dict()


def test_layerdrop_skips_layers_only_in_training(tiny_cfg):
    tiny_cfg.encoder_layerdrop = 0.5
    tiny_cfg.encoder_layers = 4
    model = Wav2Vec2Model(tiny_cfg)
    source = torch.randn(1, 4000)
    torch.manual_seed(0)
    counts = [len(model.train()(source, mask=False, features_only=True)["layer_results"]) for _ in range(200)]
    assert 1.6 < sum(counts) / len(counts) < 2.4
    assert len(model.eval()(source, mask=False, features_only=True)["layer_results"]) == 4


def test_feature_grad_mult_scales_or_stops_cnn_gradients(tiny_cfg):
    source = torch.randn(2, 4000)
    grads = {}
    for mult in (1.0, 0.1, 0.0):
        torch.manual_seed(0)
        tiny_cfg.feature_grad_mult = mult
        model = Wav2Vec2Model(tiny_cfg).eval()
        model(source, mask=False, features_only=True)["x"].sum().backward()
        grads[mult] = model.feature_extractor.conv_layers[1][0].weight.grad
    assert grads[0.0] is None
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-7)


def test_pretraining_forward_trains_end_to_end(tiny_cfg):
    torch.manual_seed(0)
    model = Wav2Vec2Model(tiny_cfg).train()
    out = model(torch.randn(2, 8000))
    masked = int(out["x"].size(-1))
    assert out["x"].shape == (1 + tiny_cfg.num_negatives, 2, masked)
    loss = torch.nn.functional.cross_entropy(model.get_logits(out), torch.zeros(2 * masked, dtype=torch.long))
    loss.backward()
    assert model.mask_emb.grad is not None and model.quantizer.weight_proj.weight.grad is not None


def test_target_layer_stops_early(tiny_cfg):
    model = Wav2Vec2Model(tiny_cfg).eval()
    source = torch.randn(1, 4000)
    with torch.no_grad():
        first = model(source, mask=False, features_only=True, layer=0)
        full = model(source, mask=False, features_only=True)
    assert len(first["layer_results"]) == 1
    assert torch.equal(first["layer_results"][0][0], full["layer_results"][0][0])
