"""A run killed after k updates and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train import loop
from w2v2.train.config_loading import load_train_config
from w2v2.train.trainer import Trainer
from tests.corpus import FIXTURE_CONFIGS


def pretrain_config(manifest: Path):
    overrides = [f"task.data={manifest}", "optimization.max_update=14", "checkpoint.save_interval_updates=3",
                 "checkpoint.keep_interval_updates=-1", "common.log_interval=5", "common.seed=3"]
    return load_train_config(str(FIXTURE_CONFIGS), "tiny_pretrain", overrides).cfg


class Killed(Exception):
    pass


@pytest.fixture
def one_thread():
    """Multi-threaded CPU kernels may sum in a different order from run to run (seen as 1e-7 noise
    between two identical 2-thread runs); with one thread a run is bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_and_resumed_run_matches_uninterrupted_run(tiny_manifest, tmp_path, monkeypatch, one_thread):
    full = loop.train(pretrain_config(tiny_manifest), tmp_path / "full")
    assert full.num_updates == 14 and full.epoch >= 2  # the resume below crosses an epoch boundary

    step = Trainer.train_step

    def dies_after_nine(self, batches):
        if self.num_updates == 9:
            raise Killed
        return step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", dies_after_nine)
    with pytest.raises(Killed):
        loop.train(pretrain_config(tiny_manifest), tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "train_step", step)
    saved = load_checkpoint_file(tmp_path / "resumed" / "checkpoints" / "checkpoint_last.pt")
    assert saved["optimizer_history"][-1]["num_updates"] == 9
    resumed = loop.train(pretrain_config(tiny_manifest), tmp_path / "resumed")
    assert resumed.num_updates == 14

    a = load_checkpoint_file(tmp_path / "full" / "checkpoints" / "checkpoint_last.pt")
    b = load_checkpoint_file(tmp_path / "resumed" / "checkpoints" / "checkpoint_last.pt")
    assert a["extra_state"]["train_iterator"] == b["extra_state"]["train_iterator"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for x, y in zip(a["last_optimizer_state"]["state"].values(), b["last_optimizer_state"]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"])
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert "checkpoint_1_3.pt" in names and "checkpoint_best.pt" in names and "checkpoint_last.pt" in names
