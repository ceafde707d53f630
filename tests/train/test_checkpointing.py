"""fairseq's checkpoint names, best tracking, pruning, and where a run resumes from."""

from __future__ import annotations

import re

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.checkpointing import (BestMetric, CheckpointPolicy, find_restore, load_optimizer_state, rng_state,
                                      set_rng_state)
from w2v2.train.config import CheckpointConfig


def save(policy, best, epoch, updates, end_of_epoch, metric):
    """The names one save writes, with the best metric observed first as the run does."""
    return policy.names(epoch, updates, end_of_epoch, metric, best.observe(metric))


def test_names_follow_fairseq(tmp_path):
    cfg = CheckpointConfig(save_interval_updates=10)
    policy, best = CheckpointPolicy(cfg, tmp_path), BestMetric(cfg)
    assert save(policy, best, 1, 10, False, None) == ["checkpoint_1_10.pt", "checkpoint_last.pt"]
    assert save(policy, best, 1, 15, True, 3.0) == ["checkpoint1.pt", "checkpoint_best.pt", "checkpoint_last.pt"]
    assert save(policy, best, 2, 20, False, 4.0) == ["checkpoint_2_20.pt", "checkpoint_last.pt"]  # worse loss
    assert "checkpoint_best.pt" in save(policy, best, 2, 25, True, 3.0)  # a tie is a new best, as in fairseq
    assert best.value == 3.0
    quiet_cfg = CheckpointConfig(no_epoch_checkpoints=True, no_last_checkpoints=True, checkpoint_suffix="-x")
    assert save(CheckpointPolicy(quiet_cfg, tmp_path), BestMetric(quiet_cfg), 3, 30, True, 1.0) == ["checkpoint_best-x.pt"]


def test_maximized_metric_and_non_finite_values():
    best = BestMetric(CheckpointConfig(maximize_best_checkpoint_metric=True))
    assert best.observe(0.5) and not best.observe(0.4) and best.observe(0.7)
    assert not best.observe(float("nan")) and not best.observe(float("inf")) and best.value == 0.7


def test_patience_counts_validations_without_strict_improvement():
    best = BestMetric(CheckpointConfig(patience=2))
    for value in (5.0, 4.0, 4.0):  # the tie does not count as progress
        best.observe(value)
    assert not best.patience_exhausted
    best.observe(float("nan"))
    assert best.patience_exhausted
    assert not BestMetric(CheckpointConfig()).patience_exhausted


def test_write_copies_and_prunes(tmp_path):
    cfg = CheckpointConfig(save_interval_updates=5, keep_interval_updates=2)
    policy, best = CheckpointPolicy(cfg, tmp_path), BestMetric(cfg)
    for updates in (5, 10, 15, 20):
        policy.write({"model": {"w": torch.tensor([updates])}}, save(policy, best, 1, updates, False, None))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_1_15.pt", "checkpoint_1_20.pt", "checkpoint_last.pt"]
    last = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert last["model"]["w"].item() == 20


@pytest.mark.parametrize("maximize, kept", [(False, ["1.500", "2.000"]), (True, ["3.000", "2.500"])])
def test_keep_best_checkpoints(tmp_path, maximize, kept):
    cfg = CheckpointConfig(keep_best_checkpoints=2, best_checkpoint_metric="wer", no_last_checkpoints=True,
                           maximize_best_checkpoint_metric=maximize, save_interval_updates=1, no_epoch_checkpoints=True)
    policy, best = CheckpointPolicy(cfg, tmp_path), BestMetric(cfg)
    for updates, wer in enumerate([2.0, 3.0, 1.5, 2.5], start=1):
        policy.write({"model": {}}, save(policy, best, 1, updates, False, wer))
    names = sorted(p.name for p in tmp_path.glob("checkpoint.best_*"))
    # fairseq's name: the value with 3 decimals, one tie-breaking digit, then the suffix
    assert len(names) == 2 and all(re.fullmatch(r"checkpoint\.best_wer_\d\.\d{3}[01]\.pt", n) for n in names)
    assert sorted(n[len("checkpoint.best_wer_"):][:5] for n in names) == sorted(kept)


def test_restore_path(tmp_path):
    cfg = CheckpointConfig()
    assert find_restore(cfg, tmp_path) is None  # the default file may be missing: a fresh start
    torch.save({"model": {}}, tmp_path / "checkpoint_last.pt")
    path, state, why = find_restore(cfg, tmp_path)
    assert path == tmp_path / "checkpoint_last.pt" and state == {"model": {}} and "newest loadable" in why
    with pytest.raises(W2v2Error, match="restore_file.*does not exist"):
        find_restore(CheckpointConfig(restore_file="elsewhere.pt"), tmp_path)
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "elsewhere.pt")
    assert find_restore(CheckpointConfig(restore_file="elsewhere.pt"), tmp_path)[0] == tmp_path / "elsewhere.pt"


def test_rng_state_round_trip(tmp_path):
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_optimizer_state_of_another_model_is_refused(fairseq_dir):
    saved = torch.load(fairseq_dir / "training_run" / "pretrain_run_last.pt", weights_only=True)["last_optimizer_state"]
    n = len(saved["param_groups"][0]["params"])
    same_count = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2)) for _ in range(n)])
    with pytest.raises(W2v2Error, match="parameter 0 has shape"):
        load_optimizer_state(same_count, saved, "run.pt")
    fewer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(W2v2Error, match=f"groups of \\[{n}\\] parameters, but the model trains 1"):
        load_optimizer_state(fewer, saved, "run.pt")
def test_save_interval_writes_every_nth_epoch(tmp_path):
    cfg = CheckpointConfig(save_interval=2)
    policy, best = CheckpointPolicy(cfg, tmp_path), BestMetric(cfg)
    assert [save(policy, best, epoch, epoch * 10, True, None) for epoch in (1, 2, 3, 4)] == [
        ["checkpoint_last.pt"], ["checkpoint2.pt", "checkpoint_last.pt"], ["checkpoint_last.pt"],
        ["checkpoint4.pt", "checkpoint_last.pt"]]


def write_saves(policy, best, saves) -> list:
    """Write each (epoch, updates, end_of_epoch) save; returns the file names left."""
    for epoch, updates, end_of_epoch in saves:
        policy.write({"model": {}}, save(policy, best, epoch, updates, end_of_epoch, None))
    return sorted(p.name for p in policy.save_dir.iterdir())


def test_keep_interval_updates_pattern_spares_multiples(tmp_path):
    cfg = CheckpointConfig(save_interval_updates=5, keep_interval_updates=1, keep_interval_updates_pattern=10,
                           no_last_checkpoints=True)
    names = write_saves(CheckpointPolicy(cfg, tmp_path), BestMetric(cfg), [(1, n, False) for n in (5, 10, 15, 20, 25)])
    assert names == ["checkpoint_1_10.pt", "checkpoint_1_20.pt", "checkpoint_1_25.pt"]


def test_keep_last_epochs_prunes_older_epoch_checkpoints(tmp_path):
    cfg = CheckpointConfig(keep_last_epochs=2, no_last_checkpoints=True)
    names = write_saves(CheckpointPolicy(cfg, tmp_path), BestMetric(cfg), [(e, e * 10, True) for e in (1, 2, 3, 4)])
    assert names == ["checkpoint3.pt", "checkpoint4.pt"]
