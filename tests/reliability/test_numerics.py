"""NaN audio in training and validation, and a diverging run."""

from __future__ import annotations

import logging

import pytest

from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train import health, loop
from w2v2.train.health import TrainingDiverged
from tests.reliability.faults import command, copy_corpus, poison, start, updates_of
from tests.train.tiny_configs import finetuning, pretraining


def test_nan_training_file_is_named_and_the_fp32_warning_speaks_of_no_loss_scale(tiny_manifest, tmp_path, caplog):
    manifest = copy_corpus(tiny_manifest, tmp_path / "corpus")
    bad = poison(manifest, "train", 5)
    with caplog.at_level(logging.WARNING):
        summary = loop.train(finetuning(manifest, "optimization.max_epoch=1", "optimization.max_update=100",
                                        "dataset.disable_validation=true", "checkpoint.no_save=true"), tmp_path)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("non-finite update")]
    assert len(skipped) == 1 and "the loss is nan" in skipped[0] and bad in skipped[0]
    assert not any("loss scale" in r.getMessage() for r in caplog.records)
    assert summary.num_updates > 0  # the other batches trained


def test_nan_validation_file_is_named_and_never_becomes_the_best(tiny_manifest, tmp_path, caplog):
    manifest = copy_corpus(tiny_manifest, tmp_path / "corpus")
    bad = poison(manifest, "valid", 3)
    with caplog.at_level(logging.WARNING):
        summary = loop.train(pretraining(manifest, "optimization.max_update=4", "dataset.validate_interval_updates=2",
                                         "checkpoint.save_interval_updates=2"), tmp_path)
    assert summary.best is None
    saved = tmp_path / "checkpoints"
    assert not (saved / "checkpoint_best.pt").exists()
    assert "best" not in load_checkpoint_file(saved / "checkpoint_last.pt")["extra_state"]  # none was recorded
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation loss is not finite")]
    assert len(named) == 2 and all(bad in m and "cannot make a best checkpoint" in m for m in named)


def test_divergence_stops_with_a_message_and_the_last_applied_update_saved(tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(health, "NONFINITE_STOP", 6)  # the real 50 take minutes on 2 cores; the path is the same
    cfg = pretraining(tiny_manifest, "optimization.lr=[1000.0]", "optimization.max_update=400",
                      "lr_scheduler.warmup_updates=0", "checkpoint.save_interval_updates=1000",
                      "dataset.disable_validation=true")
    with pytest.raises(TrainingDiverged) as error:
        loop.train(cfg, tmp_path)
    message = str(error.value)
    last = tmp_path / "checkpoints" / "checkpoint_last.pt"
    assert message.startswith("training diverged: 6 updates in a row had non-finite losses")
    if "are saved in" in message:
        applied = updates_of(last)
        assert f"The weights of update {applied}, the last update applied" in message and str(last) in message
        assert all(v.isfinite().all() for v in load_checkpoint_file(last)["model"].values())
    else:
        assert "no longer finite, so nothing was saved" in message and not last.exists()
    assert "`optimization.lr` (now [1000.0])" in message and "\n" not in message


@pytest.mark.slow
def test_divergence_through_the_command_exits_2_without_a_traceback(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    process = start(command(tiny_manifest, run, "optimization.lr=[1000.0]", "optimization.max_update=400",
                            "lr_scheduler.warmup_updates=0", "checkpoint.save_interval_updates=1000",
                            "dataset.disable_validation=true"))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 2, output[-3000:]
    assert f"w2v2-hydra-train: error: training diverged: {health.NONFINITE_STOP} updates in a row" in output
    assert "Traceback" not in output and "FloatingPointError" not in output
    assert "loss scale" not in output  # fp32: no scaler to blame
