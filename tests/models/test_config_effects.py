"""Each model key changes the model: a tiny model built and run with the key changed differs from one
built and run with the same seeds and the default. A key the model ignored would give equal results."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch

from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model
from tests.models.conftest import TINY

CHANNELS = {"mask_channel_prob": 0.5}
# key -> (value, other settings the key needs to matter); the pretraining model's full forward.
PRETRAINING = {
    "extractor_mode": ("layer_norm", {}),
    "encoder_layers": (3, {}),
    "encoder_embed_dim": (48, {}),
    "encoder_ffn_embed_dim": (96, {}),
    "encoder_attention_heads": (2, {}),
    "dropout": (0.3, {}),
    "attention_dropout": (0.3, {}),
    "activation_dropout": (0.3, {}),
    "encoder_layerdrop": (0.5, {}),
    "dropout_input": (0.3, {}),
    "dropout_features": (0.3, {}),
    "final_dim": (8, {}),
    "layer_norm_first": (True, {}),
    "conv_feature_layers": ("[(16,10,5)]+[(16,3,2)]*3+[(16,2,2)]*2", {}),
    "conv_bias": (True, {}),
    "logit_temp": (0.5, {}),
    "quantize_targets": (False, {}),
    "target_glu": (True, {}),
    "latent_vars": (5, {}),
    "latent_groups": (4, {}),
    "latent_dim": (8, {}),
    "latent_temp": ([1.0, 0.5, 0.9], {}),  # the Gumbel temperature: it shows in the gradients
    "feature_grad_mult": (0.5, {}),
    "num_negatives": (3, {}),
    "negatives_from_everywhere": (True, {}),
    "cross_sample_negatives": (2, {}),
    "conv_pos": (4, {}),
    "conv_pos_groups": (2, {}),
    "crop_seq_to_multiple": (5, {}),
}
# The masking keys, seen in `apply_mask` (a padded batch: rows of unequal length).
MASKING = {
    "mask_length": (4, {}),
    "mask_prob": (0.3, {}),
    "mask_selection": ("poisson", {}),
    "mask_other": (3.0, {"mask_selection": "normal"}),
    "no_mask_overlap": (True, {}),
    "mask_min_space": (3, {"no_mask_overlap": True, "mask_length": 2}),
    "require_same_masks": (False, {}),
    "mask_dropout": (0.5, {}),
    "mask_channel_length": (2, CHANNELS),
    "mask_channel_prob": (0.5, {}),
    "mask_channel_before": (True, CHANNELS),
    "mask_channel_selection": ("poisson", CHANNELS),
    "mask_channel_other": (3.0, {**CHANNELS, "mask_channel_selection": "normal"}),
    "no_mask_channel_overlap": (True, CHANNELS),
    "mask_channel_min_space": (3, {**CHANNELS, "no_mask_channel_overlap": True, "mask_channel_length": 2}),
}
# The fine-tuning model's keys, seen in its logits in training mode (masking on).
FINETUNING = {
    **{key: (value, {"apply_mask": True, **needs}) for key, (value, needs) in MASKING.items()
       if key not in ("mask_min_space", "mask_channel_min_space")},  # fairseq does not pass these two on
    # short spans: on 24 frames of spans of 10, both 0.5 and 0.9 draw the minimum of 2 spans
    "mask_prob": (0.9, {"apply_mask": True, "mask_length": 2}),
    "apply_mask": (True, {}),
    "dropout_input": (0.3, {}),
    "final_dropout": (0.3, {}),
    "dropout": (0.3, {}),
    "attention_dropout": (0.3, {}),
    "activation_dropout": (0.3, {}),
    "layerdrop": (0.5, {}),
    "blank_weight": (2.0, {}),
}


def padded_batch() -> tuple:
    """(source, padding mask) of two utterances, the second padded from sample 5000 on."""
    generator = torch.Generator().manual_seed(3)
    source = torch.randn(2, 8000, generator=generator)
    padding = torch.zeros(2, 8000, dtype=torch.bool)
    padding[1, 5000:] = True
    return source, padding


def pretraining_outputs(values: Dict[str, Any]) -> List[Any]:
    """Parameter shapes, contrastive logits and gradient norms of a freshly built model in training mode."""
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(values)).train()
    torch.manual_seed(1)
    out = model(padded_batch()[0])
    logits = model.get_logits(out)
    torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)).backward()
    grads = torch.stack([p.grad.norm() if p.grad is not None else torch.tensor(-1.0) for p in model.parameters()])
    return [{k: v.shape for k, v in model.state_dict().items()}, out["x"], out["features_pen"], grads]


def masking_outputs(values: Dict[str, Any]) -> List[Any]:
    """The masked features and the time mask `apply_mask` gives a padded batch of encoder inputs."""
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(values))
    x = torch.randn(3, 60, int(values["encoder_embed_dim"]), generator=torch.Generator().manual_seed(2))
    padding = torch.zeros(3, 60, dtype=torch.bool)
    padding[2, 35:] = True
    torch.manual_seed(1)
    masked, mask = model.apply_mask(x, padding)
    return [masked, mask]


def finetuning_outputs(values: Dict[str, Any]) -> List[Any]:
    """The logits (blank weight applied) of a fine-tuning model in training mode, on a padded batch."""
    torch.manual_seed(0)
    model = Wav2Vec2Ctc(Wav2Vec2CtcConfig.from_dict(values), Wav2Vec2Config.from_dict(TINY), 12).train()
    torch.manual_seed(1)
    return [model.get_logits(model(*padded_batch()))]


def differ(a: List[Any], b: List[Any]) -> bool:
    """True when some output differs in shape or by more than float noise."""
    for x, y in zip(a, b):
        if isinstance(x, dict) or x is None or y is None:
            if x != y:
                return True
        elif x.shape != y.shape or not torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-5):
            return True
    return False


@pytest.mark.parametrize("key, value, needs", [(k, v, n) for k, (v, n) in PRETRAINING.items()], ids=list(PRETRAINING))
def test_pretraining_key_changes_the_model(key, value, needs):
    assert value != {**TINY, **needs}.get(key, getattr(Wav2Vec2Config(), key))
    assert differ(pretraining_outputs({**TINY, **needs}), pretraining_outputs({**TINY, **needs, key: value}))


@pytest.mark.parametrize("key, value, needs", [(k, v, n) for k, (v, n) in MASKING.items()], ids=list(MASKING))
def test_masking_key_changes_the_masks(key, value, needs):
    assert value != {**TINY, **needs}.get(key, getattr(Wav2Vec2Config(), key))
    assert differ(masking_outputs({**TINY, **needs}), masking_outputs({**TINY, **needs, key: value}))


@pytest.mark.parametrize("key, value, needs", [(k, v, n) for k, (v, n) in FINETUNING.items()], ids=list(FINETUNING))
def test_finetuning_key_changes_the_model(key, value, needs):
    assert value != needs.get(key, getattr(Wav2Vec2CtcConfig(), key))
    assert differ(finetuning_outputs(needs), finetuning_outputs({**needs, key: value}))


def test_required_seq_len_multiple_pads_the_encoder_input():
    source = torch.randn(1, 8200)
    seen = {}
    for multiple in (1, 2):  # 2 is the default
        model = Wav2Vec2Model(Wav2Vec2Config.from_dict({**TINY, "required_seq_len_multiple": multiple})).eval()
        layer = model.encoder.layers[0]
        layer.register_forward_hook(lambda module, args, out: seen.update({multiple: args[0].size(0)}))
        with torch.no_grad():
            frames = model(source, mask=False, features_only=True)["x"].size(1)
        assert frames == 25  # an odd count, so that a multiple of 2 needs one frame of padding
    assert seen == {1: 25, 2: 26}


def test_finetuning_feature_grad_mult_lets_gradients_into_the_cnn():
    grads = {}
    for mult in (0.0, 0.5):
        torch.manual_seed(0)
        cfg = Wav2Vec2CtcConfig.from_dict({"feature_grad_mult": mult})
        model = Wav2Vec2Ctc(cfg, Wav2Vec2Config.from_dict(TINY), 12).eval()
        model(padded_batch()[0])["encoder_out"].sum().backward()
        grads[mult] = model.w2v_encoder.w2v_model.feature_extractor.conv_layers[1][0].weight.grad
    assert grads[0.0] is None and grads[0.5] is not None and grads[0.5].abs().sum() > 0
