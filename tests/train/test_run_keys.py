"""Config keys the run loop implements as fairseq does: each test fails if its key did nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from w2v2.errors import W2v2Error
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train import loop
from w2v2.train.config_loading import load_train_config
from w2v2.train.progress import read_run_log
from tests.corpus import FIXTURE_CONFIGS


def pretrain(manifest: Path, *overrides: str):
    base = [f"task.data={manifest}", "optimization.max_update=4", "checkpoint.save_interval_updates=2",
            "common.log_interval=1", "model.encoder_layerdrop=0"]
    return load_train_config(str(FIXTURE_CONFIGS), "tiny_pretrain", [*base, *overrides]).cfg


def records(run_dir: Path, tag: str) -> list:
    return [values for t, values in read_run_log(run_dir) if t == tag]


def test_checkpoints_store_the_current_and_the_best_value(tiny_manifest, tmp_path):
    loop.train(pretrain(tiny_manifest, "dataset.validate_interval_updates=1"), tmp_path)
    valid = [r["valid_loss"] for r in records(tmp_path, "valid")]
    extra = load_checkpoint_file(tmp_path / "checkpoints" / "checkpoint_last.pt")["extra_state"]
    assert extra["val_loss"] == valid[-1]  # fairseq: the value of this save's validation
    assert extra["best"] == min(valid)


def test_lr_scheduler_best_is_the_lowest_epoch_end_metric(tiny_manifest, tmp_path):
    cfg = pretrain(tiny_manifest, "optimization.max_update=1000", "optimization.max_epoch=2",
                   "checkpoint.save_interval_updates=0", "checkpoint.best_checkpoint_metric=accuracy",
                   "checkpoint.maximize_best_checkpoint_metric=true")
    loop.train(cfg, tmp_path)
    accuracies = [r["valid_accuracy"] for r in records(tmp_path, "valid")]
    state = load_checkpoint_file(tmp_path / "checkpoints" / "checkpoint_last.pt")
    assert len(accuracies) == 2
    # fairseq's FairseqLRScheduler.step keeps the minimum, even for a maximised metric, and runs after the
    # epoch's last save: the last checkpoint holds the epochs before it
    assert state["optimizer_history"][-1]["lr_scheduler_state"]["best"] == min(accuracies[:-1])
    assert state["extra_state"]["best"] == max(accuracies)


def test_reset_meters_drops_the_history_on_restore(tiny_manifest, tmp_path):
    loop.train(pretrain(tiny_manifest, "optimization.max_update=2"), tmp_path / "a")
    kept = loop.TrainingRun(pretrain(tiny_manifest), tmp_path / "a")
    reset = loop.TrainingRun(pretrain(tiny_manifest, "checkpoint.reset_meters=true"), tmp_path / "a")
    assert kept.state.history and not reset.state.history
    assert kept.trainer.num_updates == reset.trainer.num_updates == 2


def test_optimizer_overrides_apply_to_every_group_after_restore(tiny_manifest, tmp_path):
    loop.train(pretrain(tiny_manifest, "optimization.max_update=2"), tmp_path)
    run = loop.TrainingRun(pretrain(tiny_manifest, "checkpoint.optimizer_overrides=\"{'weight_decay': 0.5}\""), tmp_path)
    assert [g["weight_decay"] for g in run.trainer.optimizer.param_groups] == [0.5]
    fresh = loop.TrainingRun(pretrain(tiny_manifest, "checkpoint.optimizer_overrides=\"{'weight_decay': 0.5}\""),
                             tmp_path / "fresh")  # nothing restored: the config's value stays
    assert [g["weight_decay"] for g in fresh.trainer.optimizer.param_groups] == [0.01]


def test_skip_remainder_batch_drops_the_short_last_update(tiny_manifest, tmp_path):
    common = ["optimization.max_update=1000", "optimization.max_epoch=1", "optimization.update_freq=[5]",
              "checkpoint.save_interval_updates=0", "dataset.disable_validation=true"]
    full = loop.train(pretrain(tiny_manifest, *common), tmp_path / "full")
    run = loop.TrainingRun(pretrain(tiny_manifest, *common), tmp_path / "probe")
    batches = len(run.train_data.sampler)
    assert batches % 5, "the corpus must leave a remainder for this test"
    skipped = loop.train(pretrain(tiny_manifest, *common, "optimization.skip_remainder_batch=true"), tmp_path / "skip")
    assert full.num_updates == -(-batches // 5) and skipped.num_updates == batches // 5


def test_log_keys_choose_the_logged_model_outputs(tiny_manifest, tmp_path):
    loop.train(pretrain(tiny_manifest, "optimization.max_update=1", "criterion.log_keys=[temp]"), tmp_path)
    inner = records(tmp_path, "train_inner")[0]
    assert "temp" in inner and "prob_perplexity" not in inner and "code_perplexity" not in inner


def test_settings_without_effect_are_reported_once(tiny_manifest, tmp_path, caplog):
    cfg = pretrain(tiny_manifest, "optimization.max_update=1", "common.wandb_project=mine",
                   "distributed_training.zero_sharding=os")
    with caplog.at_level(logging.WARNING):
        loop.train(cfg, tmp_path)
    said = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage() and "ddp_backend" not in
            r.getMessage()]  # the fixture config's legacy_ddp is torch DDP here too
    assert said == ["common.wandb_project = 'mine' has no effect in w2v2: it is accepted for fairseq compatibility only.",
                    "distributed_training.zero_sharding = 'os' has no effect in w2v2: it is accepted for fairseq "
                    "compatibility only."]


def test_no_batch_at_all_is_an_error_not_an_endless_loop(tiny_manifest, tmp_path):
    with pytest.raises(W2v2Error, match="yields no batch"):
        loop.train(pretrain(tiny_manifest, "task.min_sample_size=100000000"), tmp_path)


def test_curriculum_keeps_the_length_order_for_its_epochs(tiny_manifest, tmp_path, monkeypatch):
    from w2v2.data.sampler import LengthBatchSampler

    seen = []
    set_epoch = LengthBatchSampler.set_epoch

    def recording(self, epoch, start=0, shuffle=None):
        if self.shuffle:  # the training sampler
            seen.append((epoch, shuffle))
        return set_epoch(self, epoch, start, shuffle)

    monkeypatch.setattr(LengthBatchSampler, "set_epoch", recording)
    loop.train(pretrain(tiny_manifest, "optimization.max_update=1000", "optimization.max_epoch=3",
                        "dataset.curriculum=2", "checkpoint.save_interval_updates=0",
                        "dataset.disable_validation=true"), tmp_path)
    assert seen == [(1, False), (2, False), (3, True)]
