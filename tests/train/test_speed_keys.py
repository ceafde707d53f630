"""Our own speed keys in `common` (fairseq has none): `feature_cache`, `compile`, `compile_dynamic`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train import loop, setup
from w2v2.train.progress import read_run_log
from w2v2.train.task import setup_task
from tests.train.tiny_configs import finetuning, pretraining


def fine_tune(manifest: Path, run_dir: Path, *overrides: str) -> loop.TrainingRun:
    run = loop.TrainingRun(finetuning(manifest, "optimization.max_update=8", "model.layerdrop=0", *overrides), run_dir)
    run.run()
    return run


def test_feature_cache_runs_the_frozen_cnn_once_per_utterance(tiny_manifest, tmp_path):
    utterances = sum(len((tiny_manifest / f"{split}.tsv").read_text().splitlines()) - 1 for split in ("train", "valid"))
    cached = fine_tune(tiny_manifest, tmp_path / "cached", "common.feature_cache=true", "optimization.max_epoch=3",
                       "optimization.max_update=1000")
    cache = cached.task.feature_cache
    assert cache.misses == len(cache.entries) <= utterances and cache.hits >= cache.misses  # epochs 2 and 3 hit
    assert fine_tune(tiny_manifest, tmp_path / "plain").task.feature_cache is None


def test_feature_cache_needs_a_frozen_cnn_in_fine_tuning(tiny_manifest):
    with pytest.raises(W2v2Error, match="`model.feature_grad_mult` is 0.1"):
        setup_task(finetuning(tiny_manifest, "common.feature_cache=true", "model.feature_grad_mult=0.1")).build_model()
    with pytest.raises(W2v2Error, match="pretraining trains the CNN"):
        setup_task(pretraining(tiny_manifest, "common.feature_cache=true"))


@pytest.mark.parametrize("dynamic", [None, False], ids=["dynamic_default", "static"])
def test_compile_wraps_the_training_forward(tiny_manifest, tmp_path, monkeypatch, dynamic):
    compiled = []

    def fake_compile(module, dynamic=None):
        compiled.append((module, dynamic))
        return torch.nn.Identity()

    monkeypatch.setattr(setup.torch, "compile", fake_compile)
    extra = [] if dynamic is None else [f"common.compile_dynamic={str(dynamic).lower()}"]
    run = loop.TrainingRun(pretraining(tiny_manifest, "common.compile=true", *extra), tmp_path)
    assert compiled == [(run.trainer.model, dynamic)] and isinstance(run.trainer.forward_module, torch.nn.Identity)
    plain = loop.TrainingRun(pretraining(tiny_manifest), tmp_path / "plain")
    assert plain.trainer.forward_module is plain.trainer.model and len(compiled) == 1


@pytest.mark.slow
def test_compiled_training_follows_the_eager_losses(tiny_manifest, tmp_path):
    """Real torch.compile (inductor, CPU): a few fine-tuning updates give the eager losses."""
    def losses(run_dir: Path, *overrides: str) -> list:
        fine_tune(tiny_manifest, run_dir, "optimization.max_update=4", "model.mask_prob=0",
                  "model.mask_channel_prob=0", "model.activation_dropout=0", *overrides)
        return [values["loss"] for tag, values in read_run_log(run_dir) if tag == "train_inner"]

    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled", "common.compile=true")
    assert len(eager) == len(compiled) > 0
    torch.testing.assert_close(torch.tensor(compiled, dtype=torch.float64), torch.tensor(eager, dtype=torch.float64),
                               rtol=1e-4, atol=1e-4)
