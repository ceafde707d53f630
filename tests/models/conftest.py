"""Tiny random models for unit tests."""

from __future__ import annotations

import pytest

from w2v2.models.config import Wav2Vec2Config

TINY = dict(
    conv_feature_layers="[(16,10,5)]+[(16,3,2)]*4+[(16,2,2)]*2", encoder_embed_dim=32, encoder_layers=2,
    encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4, final_dim=16,
    quantize_targets=True, latent_vars=10, latent_groups=2, num_negatives=5,
)


@pytest.fixture
def tiny_cfg() -> Wav2Vec2Config:
    return Wav2Vec2Config.from_dict(TINY)
