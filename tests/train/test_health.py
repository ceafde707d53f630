"""Pretraining health warnings."""

from __future__ import annotations

import logging

import pytest

from w2v2.train.config_loading import load_train_config
from w2v2.train.health import NONFINITE_STOP, HealthMonitor, TrainingDiverged
from w2v2.train.trainer import UpdateResult
from tests.corpus import FIXTURE_CONFIGS


@pytest.fixture
def monitor():
    cfg = load_train_config(str(FIXTURE_CONFIGS), "tiny_pretrain", ["task.data=/x", "checkpoint.patience=2"]).cfg
    return HealthMonitor(cfg)


def stats(**values):
    base = {"loss": 50.0, "sample_size": 10.0, "correct": 3.0, "count": 10.0, "code_perplexity": 30.0, "batches": 1.0}
    return UpdateResult({**base, **values}, 1.0, True)


def test_healthy_updates_warn_nothing(monitor, caplog):
    with caplog.at_level(logging.WARNING):
        monitor.observe(stats(), 1)
    assert not caplog.records


def test_codebook_collapse_and_trivial_task_warn_once(monitor, caplog):
    with caplog.at_level(logging.WARNING):
        monitor.observe(stats(code_perplexity=1.2), 5)
        monitor.observe(stats(code_perplexity=1.1), 6)
        monitor.observe(stats(correct=10.0, loss=0.01), 7)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "collapsed to 1.2 of 40" in messages[0] and "looks solved" in messages[1]


def test_repeated_non_finite_updates_warn_then_stop(monitor, caplog):
    bad = UpdateResult({"loss": float("nan"), "batches": 1.0}, float("inf"), False)
    with caplog.at_level(logging.WARNING):
        for update in range(3):
            monitor.observe(bad, update)
    assert "3 updates in a row" in caplog.records[-1].getMessage()
    with pytest.raises(TrainingDiverged, match="diverged"):
        for update in range(NONFINITE_STOP):
            monitor.observe(bad, update)

