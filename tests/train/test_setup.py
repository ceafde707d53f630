"""What a run takes from the config while it sets up: device, precision, loss scaling, DDP, batching, data
loaders and the optimizer, and what happens to items too long for a batch. Each test fails if its key were ignored."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from tests.corpus import FIXTURE_CONFIGS
from tests.train.tiny_configs import pretraining
from w2v2 import devices
from w2v2.errors import RunFault, W2v2Error
from w2v2.train import loop, setup
from w2v2.train.config_loading import load_train_config
from w2v2.train.health import TrainingDiverged
from w2v2.train.interrupts import TrainingInterrupted
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



def run_of(manifest: Path, run_dir: Path, *overrides: str) -> loop.TrainingRun:
    """A run of tiny_pretrain.yaml without LayerDrop, set up but not started."""
    return loop.TrainingRun(pretraining(manifest, "model.encoder_layerdrop=0", *overrides), run_dir)


def test_cpu_forces_the_cpu_over_the_requested_device(tiny_manifest, monkeypatch):
    monkeypatch.setenv("W2V2_DEVICE", "cuda")
    monkeypatch.delenv("W2V2_MATMUL_PRECISION", raising=False)
    monkeypatch.setattr(setup.devices, "pick_device", lambda requested, rank: torch.device(requested))
    kept = []
    monkeypatch.setattr(setup.devices, "keep_freed_cpu_memory", lambda: kept.append(True) or True)
    info = ProcessInfo(0, 0, 1, 1)
    assert setup.choose_device(pretraining(tiny_manifest, "common.cpu=true"), info) == torch.device("cpu")
    assert kept == [True]  # glibc keeps freed memory, on the CPU only
    assert setup.choose_device(pretraining(tiny_manifest, "common.cpu=false"), info) == torch.device("cuda")
    assert kept == [True]


def test_checkpoint_activations_on_the_cpu_has_glibc_return_freed_memory(tiny_manifest, monkeypatch):
    calls = []
    monkeypatch.setattr(setup.devices, "keep_freed_cpu_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(setup.devices, "return_freed_cpu_memory", lambda: calls.append("return") or True)
    info = ProcessInfo(0, 0, 1, 1)
    setup.choose_device(pretraining(tiny_manifest, "common.cpu=true", "model.checkpoint_activations=true"), info)
    assert calls == ["return"]  # keeping freed memory would keep what the recomputation frees
    setup.choose_device(pretraining(tiny_manifest, "common.cpu=true"), info)
    assert calls == ["return", "keep"]


def test_bf16_trains_under_bfloat16_autocast(tiny_manifest, tmp_path):
    trainer = run_of(tiny_manifest, tmp_path, "common.bf16=true").trainer
    with trainer._autocast(trainer.precision.autocast_dtype):
        assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.bfloat16
    fp32 = run_of(tiny_manifest, tmp_path / "fp32").trainer
    with fp32._autocast(fp32.precision.autocast_dtype):
        assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.float32


def test_fp16_asks_for_float16_with_loss_scaling(tiny_manifest, tmp_path):
    with pytest.raises(W2v2Error, match="`common.fp16` needs a GPU or NPU"):  # the key reaches the device check
        run_of(tiny_manifest, tmp_path, "common.fp16=true")
    assert devices.precision(torch.device("cuda"), fp16=True) == devices.Precision(torch.float16, loss_scaling=True)


@pytest.fixture
def loss_scaling_on_cpu(monkeypatch):
    """Dynamic loss scaling on the CPU, as fp16 would have it on an accelerator (torch allows it)."""
    monkeypatch.setattr(setup.devices, "precision", lambda device, fp16, bf16, amp=False: devices.Precision(None, True))


def test_fp16_init_scale_is_the_first_loss_scale(tiny_manifest, tmp_path, loss_scaling_on_cpu):
    assert run_of(tiny_manifest, tmp_path, "common.fp16_init_scale=16").trainer.loss_scale() == 16.0
    assert run_of(tiny_manifest, tmp_path / "default").trainer.loss_scale() == 128.0


def test_fp16_scale_window_is_the_growth_interval(tiny_manifest, tmp_path, loss_scaling_on_cpu):
    scaler = run_of(tiny_manifest, tmp_path, "common.fp16_scale_window=7").trainer.scaler.grad_scaler
    assert scaler.get_growth_interval() == 7
    # fairseq's default: 2**14 / world size / update_freq
    default = run_of(tiny_manifest, tmp_path / "default", "optimization.update_freq=[4]").trainer.scaler
    assert default.grad_scaler.get_growth_interval() == 2**14 // 4


class Stop(Exception):
    pass


def test_heartbeat_timeout_is_the_process_group_timeout(tiny_manifest, tmp_path, monkeypatch):
    timeouts = []

    def record(*args, timeout, **kwargs):
        timeouts.append(timeout)
        raise Stop

    monkeypatch.setattr(loop, "process_info", lambda: ProcessInfo(0, 0, 2, 2))
    monkeypatch.setattr(loop, "thread_budget", lambda *args: None)
    monkeypatch.setattr(setup.dist, "init_process_group", record)
    for overrides in (["distributed_training.heartbeat_timeout=17"], []):
        with pytest.raises(Stop):
            run_of(tiny_manifest, tmp_path, *overrides)
    assert timeouts == [timedelta(seconds=17), timedelta(minutes=30)]


@pytest.fixture
def ddp_group(tmp_path, monkeypatch):
    """A one-process gloo group, with the run told it is rank 0 of 2 so that it wraps the model in DDP."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    monkeypatch.setattr(loop, "process_info", lambda: ProcessInfo(0, 0, 2, 2))
    monkeypatch.setattr(loop, "thread_budget", lambda *args: None)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("ending", [None, TrainingInterrupted(15, "stopped"), TrainingDiverged("diverged"),
                                    RunFault("rank 1 died")], ids=["finished", "stopped", "diverged", "fault"])
def test_a_run_destroys_its_process_group_unless_a_rank_failed(tiny_manifest, tmp_path, ddp_group, monkeypatch,
                                                               ending):
    """A finished run, and one whose ranks all stopped or diverged together, frees the group while the
    interpreter is whole (tests/train/ddp_worker.py checks that gloo's threads are gone then); after a rank
    failed, another may still be inside a collective with it, and the group is left alone."""
    def end(run: loop.TrainingRun) -> None:
        raise ending

    if ending is not None:
        monkeypatch.setattr(loop.TrainingRun, "run", end)
    cfg = pretraining(tiny_manifest, "model.encoder_layerdrop=0", "optimization.max_update=1",
                      "checkpoint.no_save=true")
    if ending is None:
        assert loop.train(cfg, tmp_path).num_updates == 1
    else:
        with pytest.raises(type(ending)):
            loop.train(cfg, tmp_path)
    assert dist.is_initialized() == isinstance(ending, RunFault)


@pytest.mark.parametrize("override, attribute, value", [
    ("distributed_training.bucket_cap_mb=3", "bucket_bytes_cap", 3 * 1024 * 1024),
    ("distributed_training.find_unused_parameters=true", "find_unused_parameters", True),
    ("distributed_training.broadcast_buffers=true", "broadcast_buffers", True),
], ids=["bucket_cap_mb", "find_unused_parameters", "broadcast_buffers"])
def test_ddp_settings_reach_the_ddp_wrapper(tiny_manifest, tmp_path, ddp_group, override, attribute, value):
    # masking, a trained CNN and no LayerDrop: the model itself needs no find_unused_parameters
    changed = run_of(tiny_manifest, tmp_path / "changed", override).trainer.forward_module
    default = run_of(tiny_manifest, tmp_path / "default").trainer.forward_module
    assert isinstance(changed, torch.nn.parallel.DistributedDataParallel)
    assert getattr(changed, attribute) == value != getattr(default, attribute)


def test_num_workers_start_loader_processes(tiny_manifest, tmp_path):
    assert run_of(tiny_manifest, tmp_path, "dataset.num_workers=2").train_data.loader.num_workers == 2
    assert run_of(tiny_manifest, tmp_path / "default").train_data.loader.num_workers == 0  # the YAML's


def batch_shapes(pipeline) -> list:
    """(items, longest) of every batch of the pipeline's first epoch."""
    lengths = pipeline.sampler.lengths
    return [(len(batch), int(lengths[batch].max())) for batch in pipeline.sampler.batches()]


def test_max_tokens_and_batch_size_bound_the_training_batches(tiny_manifest, tmp_path):
    default = batch_shapes(run_of(tiny_manifest, tmp_path).train_data)  # max_tokens 64000 in the YAML
    tokens = batch_shapes(run_of(tiny_manifest, tmp_path, "dataset.max_tokens=40000").train_data)
    items = batch_shapes(run_of(tiny_manifest, tmp_path, "dataset.batch_size=1").train_data)
    assert max(n * longest for n, longest in tokens) <= 40000 < max(n * longest for n, longest in default)
    assert {n for n, _ in items} == {1} and max(n for n, _ in default) > 1


def test_valid_batch_limits_default_to_the_training_ones(tiny_manifest, tmp_path):
    default = batch_shapes(run_of(tiny_manifest, tmp_path).valid_data["valid"])
    linked = batch_shapes(run_of(tiny_manifest, tmp_path, "dataset.batch_size=1").valid_data["valid"])
    tokens = batch_shapes(run_of(tiny_manifest, tmp_path, "dataset.max_tokens_valid=33000").valid_data["valid"])
    items = batch_shapes(run_of(tiny_manifest, tmp_path, "dataset.batch_size_valid=1").valid_data["valid"])
    assert max(n for n, _ in default) > 1 and {n for n, _ in linked} == {n for n, _ in items} == {1}
    assert max(n * longest for n, longest in tokens) <= 33000 < max(n * longest for n, longest in default)


def test_subsets_name_the_manifests(tiny_manifest, tmp_path):
    run = run_of(tiny_manifest, tmp_path, "dataset.train_subset=dev_clean", "dataset.valid_subset='valid,dev_clean'")
    assert len(run.train_data.dataset) == 8 and len(run_of(tiny_manifest, tmp_path).train_data.dataset) == 24
    assert list(run.valid_data) == ["valid", "dev_clean"]


def test_disable_validation_builds_no_validation_data(tiny_manifest, tmp_path):
    assert run_of(tiny_manifest, tmp_path, "dataset.disable_validation=true").valid_data == {}
    assert list(run_of(tiny_manifest, tmp_path).valid_data) == ["valid"]


@pytest.mark.parametrize("override, name, value", [
    ("optimizer.adam_betas=(0.8,0.9)", "betas", (0.8, 0.9)),
    ("optimizer.adam_eps=1e-4", "eps", 1e-4),
    ("optimizer.weight_decay=0.5", "weight_decay", 0.5),
], ids=["adam_betas", "adam_eps", "weight_decay"])
def test_adam_settings_reach_the_optimizer(tiny_manifest, tmp_path, override, name, value):
    (group,) = run_of(tiny_manifest, tmp_path, override).trainer.optimizer.param_groups
    (default,) = run_of(tiny_manifest, tmp_path / "default").trainer.optimizer.param_groups
    assert group[name] == value != default[name]


def test_lr_is_the_peak_of_the_schedule(tiny_manifest, tmp_path):
    schedule = run_of(tiny_manifest, tmp_path, "optimization.lr=[0.002]").trainer.lr_scheduler
    assert schedule.lr_at(5) == 0.002  # warmup_updates 5 in the YAML
    assert run_of(tiny_manifest, tmp_path / "default").trainer.lr_scheduler.lr_at(5) == 0.0005


def first_update_moves(manifest: Path, run_dir: Path, *overrides: str) -> float:
    """How far the first update moves the weights (no warmup: it runs at the peak lr)."""
    run = run_of(manifest, run_dir, "lr_scheduler.warmup_updates=0", *overrides)
    before = [p.detach().clone() for p in run.trainer.model.parameters()]
    run.trainer.train_step([next(iter(run.train_data.loader))])
    return float(sum((p.detach() - b).abs().sum() for p, b in zip(run.trainer.model.parameters(), before)))


def test_clip_norm_shrinks_the_update(tiny_manifest, tmp_path):
    # Adam divides the gradient by its own size plus eps (1e-6): a gradient clipped to a norm of 1e-9
    # is small against eps, so the step is a small fraction of an unclipped one.
    clipped = first_update_moves(tiny_manifest, tmp_path / "clipped", "optimization.clip_norm=1e-9")
    free = first_update_moves(tiny_manifest, tmp_path / "free")
    assert clipped < 0.1 * free


@pytest.mark.parametrize("name", ["audio_pretraining", "audio_finetuning"])
def test_num_batch_buckets_pads_batches_to_bucket_lengths(tiny_manifest, name):
    def lengths_of(*overrides: str) -> set:
        task = setup_task(pretraining(tiny_manifest, f"task._name={name}", "task.enable_padding=true", *overrides))
        pipeline = build_pipeline(task, "train", True, CPU, ONE, 1)
        return {batch["net_input"]["source"].size(1) for batch in pipeline.loader}

    plain, bucketed = lengths_of(), lengths_of("task.num_batch_buckets=2")
    assert len(bucketed) <= 2 < len(plain) and max(bucketed) == max(plain)
