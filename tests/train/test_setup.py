"""What `build_trainer` and `build_pipeline` take from the config: loss scaling, precision, batching,
and what happens to items too long for a batch."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from tests.corpus import FIXTURE_CONFIGS
from w2v2 import devices
from w2v2.errors import W2v2Error
from w2v2.train.config_loading import load_train_config
from w2v2.train.setup import ProcessInfo, build_pipeline, build_trainer
from w2v2.train.task import setup_task

CPU, ONE = torch.device("cpu"), ProcessInfo(0, 0, 1, 1)


def task_of(name, manifest, *overrides):
    required = [f"task.data={manifest}"] + (["model.w2v_path=unused.pt"] if name == "tiny_ctc" else [])
    return setup_task(load_train_config(str(FIXTURE_CONFIGS), name, [*required, *overrides]).cfg)


def lengths(manifest, split):
    return [int(line.split("\t")[1]) for line in (manifest / f"{split}.tsv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("overrides, expected", [
    (["common.fp16=true", "common.fp16_init_scale=8", "common.fp16_scale_window=30",
      "common.fp16_scale_tolerance=0.25", "common.threshold_loss_scale=0.5", "common.min_loss_scale=0.01"],
     (torch.float16, torch.float16, 8.0, 30, 0.25, 0.5, 0.01)),
    (["common.amp=true", "common.amp_init_scale=16", "common.fp16_init_scale=16", "common.amp_scale_window=40",
      "common.fp16_scale_tolerance=0.25", "common.min_loss_scale=0.01"],
     (torch.float16, None, 16.0, 40, 0.0, None, 0.01)),
])
def test_the_trainer_takes_precision_and_loss_scaling_from_fp16_or_amp_keys(tiny_manifest, monkeypatch, overrides,
                                                                              expected):
    real = devices.precision
    # The CPU has no float16 training; ask for the settings a GPU would get.
    monkeypatch.setattr(devices, "precision", lambda device, *flags: real(SimpleNamespace(type="cuda"), *flags))
    task = task_of("tiny_pretrain", tiny_manifest, *overrides)
    trainer = build_trainer(task.cfg, task, CPU, ONE)
    scaler = trainer.scaler
    assert (trainer.precision.autocast_dtype, trainer.precision.validation_dtype, scaler.get_scale(),
            scaler.scale_window, scaler.tolerance, scaler.threshold, scaler.min_loss_scale) == expected
    assert scaler.is_enabled()


def test_amp_and_empty_cache_freq_reach_the_trainer(tiny_manifest):
    task = task_of("tiny_pretrain", tiny_manifest, "common.empty_cache_freq=3")
    assert build_trainer(task.cfg, task, CPU, ONE).empty_cache_freq == 3
    task = task_of("tiny_pretrain", tiny_manifest, "common.amp=true")
    with pytest.raises(W2v2Error, match="`common.amp` needs a GPU or NPU"):
        build_trainer(task.cfg, task, CPU, ONE)


def test_too_long_validation_items_are_refused_unless_skip_invalid_size_inputs_valid_test(tiny_manifest, caplog):
    sizes = lengths(tiny_manifest, "valid")
    budget = sorted(sizes)[-3]  # the two longest are over it
    task = task_of("tiny_ctc", tiny_manifest, f"dataset.max_tokens_valid={budget}",
                   "dataset.skip_invalid_size_inputs_valid_test=false")
    with pytest.raises(W2v2Error, match=r"2 of 8 items of validation split 'valid' are longer than "
                       rf"`dataset.max_tokens_valid` \({budget} samples; the longest has {max(sizes)}\)\. "
                       r"Set `dataset.skip_invalid_size_inputs_valid_test=true`"):
        build_pipeline(task, "valid", False, CPU, ONE, 1)
    task.cfg.dataset.skip_invalid_size_inputs_valid_test = True
    with caplog.at_level(logging.WARNING):
        pipeline = build_pipeline(task, "valid", False, CPU, ONE, 1)
    assert pipeline.sampler.num_dropped == 2 and "2 of 8 utterances are longer than" in caplog.text
    kept = sorted(index for batch in pipeline.sampler.batches() for index in batch)
    assert sorted(sizes[i] for i in kept) == sorted(sizes)[:6]


def test_training_leaves_long_items_out_where_fairseq_does(tiny_manifest):
    budget = sorted(lengths(tiny_manifest, "train"))[-2]
    # fairseq's fine-tuning dataset filters them out, whatever skip_invalid_size_inputs_valid_test says.
    task = task_of("tiny_ctc", tiny_manifest, f"dataset.max_tokens={budget}",
                   "dataset.skip_invalid_size_inputs_valid_test=false")
    assert build_pipeline(task, "train", True, CPU, ONE, 1).sampler.num_dropped == 1
    # Its pretraining dataset fails on them (an assertion in batch_by_size).
    task = task_of("tiny_pretrain", tiny_manifest, "dataset.max_tokens=20000")
    longest = min(max(lengths(tiny_manifest, "train")), task.cfg.task.max_sample_size)
    with pytest.raises(W2v2Error, match=f"`max_tokens` must be at least the longest item's length, {longest}"):
        build_pipeline(task, "train", True, CPU, ONE, 1)


@pytest.mark.parametrize("multiple, train_sizes, valid_sizes", [(1, [24], [8]), (5, [20, 4], [5, 3]),
                                                                (8, [24], [8])])
def test_required_batch_size_multiple_cuts_training_and_validation_batches(tiny_manifest, multiple, train_sizes,
                                                                           valid_sizes):
    task = task_of("tiny_ctc", tiny_manifest, "dataset.max_tokens=10000000",
                   f"dataset.required_batch_size_multiple={multiple}")
    for split, training, expected in (("train", True, train_sizes), ("valid", False, valid_sizes)):
        sampler = build_pipeline(task, split, training, CPU, ONE, 1).sampler
        assert sorted(map(len, sampler.batches()), reverse=True) == expected
