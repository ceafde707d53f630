"""fairseq's checkpoint names, best tracking, pruning, and where a run resumes from."""

from __future__ import annotations

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.checkpointing import CheckpointPolicy, load_optimizer_state, restore_path, rng_state, set_rng_state
from w2v2.train.config import CheckpointConfig


def test_names_follow_fairseq(tmp_path):
    policy = CheckpointPolicy(CheckpointConfig(save_interval_updates=10), tmp_path)
    assert policy.decide(1, 10, False, None).names == ["checkpoint_1_10.pt", "checkpoint_last.pt"]
    assert policy.decide(1, 15, True, 3.0).names == ["checkpoint1.pt", "checkpoint_best.pt", "checkpoint_last.pt"]
    assert policy.decide(2, 20, False, 4.0).names == ["checkpoint_2_20.pt", "checkpoint_last.pt"]  # worse loss
    assert policy.decide(2, 25, True, 2.5).new_best and policy.best == 2.5
    quiet = CheckpointPolicy(CheckpointConfig(no_epoch_checkpoints=True, no_last_checkpoints=True,
                                              checkpoint_suffix="-x"), tmp_path)
    assert quiet.decide(3, 30, True, 1.0).names == ["checkpoint_best-x.pt"]


def test_maximized_metric(tmp_path):
    policy = CheckpointPolicy(CheckpointConfig(maximize_best_checkpoint_metric=True), tmp_path)
    policy.decide(1, 1, True, 0.5)
    assert not policy.decide(1, 2, True, 0.4).new_best
    assert policy.decide(1, 3, True, 0.7).new_best


def test_write_copies_and_prunes(tmp_path):
    policy = CheckpointPolicy(CheckpointConfig(save_interval_updates=5, keep_interval_updates=2), tmp_path)
    for updates in (5, 10, 15, 20):
        policy.write({"model": {"w": torch.tensor([updates])}}, policy.decide(1, updates, False, None))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_1_15.pt", "checkpoint_1_20.pt", "checkpoint_last.pt"]
    last = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert last["model"]["w"].item() == 20


def test_restore_path(tmp_path):
    cfg = CheckpointConfig()
    assert restore_path(cfg, tmp_path) is None  # the default file may be missing: a fresh start
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")
    assert restore_path(cfg, tmp_path) == tmp_path / "checkpoint_last.pt"
    with pytest.raises(W2v2Error, match="restore_file.*does not exist"):
        restore_path(CheckpointConfig(restore_file="elsewhere.pt"), tmp_path)


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
