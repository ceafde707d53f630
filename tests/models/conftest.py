"""Tiny random models for unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

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


def allocation_peak(run: Callable[[], object], folder: Path) -> int:
    """The most bytes the tensors `run` allocates add up to at once ("Total Allocated" in the profiler's trace)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    prof.export_chrome_trace(str(folder / "trace.json"))
    events = json.loads((folder / "trace.json").read_text())["traceEvents"]
    return max((e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"), default=0)
