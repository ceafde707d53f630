"""Training on the stand-in NPU (tests/standin_npu.py): saturation-mode overflow, HCCL-typed stats,
per-rank device RNG in checkpoints and validation, the NPU's default length buckets."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.distributed as dist

from tests import standin_npu
from tests.train.test_setup import CPU, ONE
from tests.train.test_trainer import make_batch, make_trainer
from tests.train.tiny_configs import finetuning, pretraining
from w2v2 import devices
from w2v2.errors import W2v2Error
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train import loop, trainer as trainer_module
from w2v2.train.checkpointing import on_cpu, rng_state, set_rng_state
from w2v2.train.loss_scaler import LossScaler
from w2v2.train.setup import build_pipeline
from w2v2.train.task import setup_task


@pytest.fixture
def npu(monkeypatch):
    return standin_npu.install(monkeypatch)


def test_a_saturated_update_is_skipped_though_its_norm_is_finite(npu):
    trainer = make_trainer(LossScaler(CPU, True, init_scale=128.0))
    assert isinstance(trainer.scaler.grad_scaler, standin_npu.FakeGradScaler)  # torch_npu's scaler
    before = copy.deepcopy(trainer.model.state_dict())
    hook = standin_npu.saturate(trainer.model.w2v_encoder.proj.weight, npu)
    result = trainer.train_step([make_batch(slice(0, 2))])
    hook.remove()
    assert torch.isfinite(torch.tensor(result.grad_norm)) and not result.stepped
    assert trainer.num_updates == 0 and trainer.loss_scale() == 64.0
    assert all(torch.equal(value, before[name]) for name, value in trainer.model.state_dict().items())
    assert trainer.train_step([make_batch(slice(0, 2))]).stepped  # the status was cleared for the next one


def test_without_the_float_status_a_saturated_update_would_be_applied():
    """Why the status is needed: the same finite, saturated gradients pass a norm check."""
    trainer = make_trainer(LossScaler(CPU, True, init_scale=128.0))
    hook = standin_npu.saturate(trainer.model.w2v_encoder.proj.weight, standin_npu.FakeNpu())
    assert trainer.train_step([make_batch(slice(0, 2))]).stepped
    hook.remove()


def test_stats_go_over_hccl_as_int64_counts_and_float32_sums(npu, monkeypatch):
    sent = []

    def two_equal_ranks(tensor):
        sent.append(tensor.dtype)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", standin_npu._checked(two_equal_ranks))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    summed = trainer_module.all_reduce_sums({"sample_size": 4.0, "loss": 1.25, "ntokens": 7.0, "batches": 1.0}, CPU)
    assert summed == {"sample_size": 8.0, "loss": 2.5, "ntokens": 14.0, "batches": 2.0}
    assert sent == [torch.int64, torch.float32]
    with pytest.raises(standin_npu.HcclDtypeError, match="float64"):  # what the old float64 reduce met
        dist.all_reduce(torch.zeros(2, dtype=torch.float64))


def test_each_rank_restores_its_own_device_rng_and_tolerates_another_world_size(npu, caplog):
    states = [npu.get_rng_state(0), npu.get_rng_state(1)]
    saved = rng_state(states, "npu")
    torch.rand(4, generator=npu.generators[1])
    npu.set_device(1)
    set_rng_state(saved, CPU, rank=1)
    assert torch.equal(npu.get_rng_state(1), states[1])
    torch.rand(4, generator=npu.generators[1])
    advanced = npu.get_rng_state(1)
    with caplog.at_level(logging.WARNING):
        set_rng_state(rng_state(states[:1], "npu"), CPU, rank=1)  # saved by one rank, resumed on two
    assert torch.equal(npu.get_rng_state(1), advanced) and "none for rank 1" in caplog.text
    set_rng_state(rng_state(states, "cuda"), CPU, rank=1)  # another device kind's states are not ours
    assert torch.equal(npu.get_rng_state(1), advanced)


def test_checkpoints_carry_the_device_rng_and_a_resume_restores_it(tiny_manifest, tmp_path, npu, monkeypatch):
    torch.rand(5, generator=npu.generators[0])  # the device generator has been used
    overrides = ("optimization.max_update=2", "checkpoint.save_interval_updates=2")
    loop.train(pretraining(tiny_manifest, *overrides), tmp_path)
    saved = load_checkpoint_file(tmp_path / "checkpoints" / "checkpoint_last.pt")
    device_rng = saved["extra_state"]["w2v2"]["rng"]["device"]
    assert device_rng["kind"] == "npu" and torch.equal(device_rng["per_rank"][0], npu.get_rng_state(0))
    fresh = standin_npu.install(monkeypatch, standin_npu.FakeNpu())
    assert not torch.equal(fresh.get_rng_state(0), device_rng["per_rank"][0])
    loop.TrainingRun(pretraining(tiny_manifest, "optimization.max_update=4"), tmp_path)
    assert torch.equal(fresh.get_rng_state(0), device_rng["per_rank"][0])


def test_validation_forks_the_device_rng_too(tiny_manifest, tmp_path, npu):
    run = loop.TrainingRun(finetuning(tiny_manifest), tmp_path)
    step = run.trainer.valid_step

    def dropout_on_the_device(batch):
        torch.rand(3, generator=npu.generators[0])
        return step(batch)

    run.trainer.valid_step = dropout_on_the_device
    before = npu.get_rng_state(0)
    run.validate()
    assert torch.equal(npu.get_rng_state(0), before)
    run._validate_subset(*next(iter(run.valid_data.items())))  # the same draws, not forked
    assert not torch.equal(npu.get_rng_state(0), before)


def test_npu_runs_pad_to_length_buckets_by_default(tiny_manifest, npu, monkeypatch):
    task = setup_task(finetuning(tiny_manifest))
    assert build_pipeline(task, "train", True, CPU, ONE, 1).dataset.bucketed is not None
    cropped = setup_task(pretraining(tiny_manifest))
    assert build_pipeline(cropped, "train", True, CPU, ONE, 1).dataset.bucketed is None  # nothing to pad
    with pytest.raises(W2v2Error, match="`task.num_batch_buckets` needs padded batches"):
        build_pipeline(setup_task(pretraining(tiny_manifest, "task.num_batch_buckets=4")), "train", True, CPU, ONE, 1)
    monkeypatch.undo()  # the CPU: fairseq's default, no buckets
    assert build_pipeline(task, "train", True, CPU, ONE, 1).dataset.bucketed is None


def test_checkpoints_are_written_from_cpu_copies():
    weights = torch.nn.Linear(2, 2).state_dict()
    state = {"model": weights, "rng": (1, [torch.ones(2, requires_grad=True)]), "name": "x"}
    copied = on_cpu(state)
    assert copied["model"]._metadata == weights._metadata and type(copied["model"]) is type(weights)
    assert copied["rng"][0] == 1 and not copied["rng"][1][0].requires_grad and copied["name"] == "x"
    assert all(tensor.device.type == "cpu" for tensor in copied["model"].values())


def test_loaders_pin_memory_for_the_npu(tiny_manifest, npu, monkeypatch):
    task = setup_task(finetuning(tiny_manifest))
    monkeypatch.setattr(devices, "TORCH_VERSION", (2, 8))
    loader = build_pipeline(task, "train", True, CPU, ONE, 1).loader
    assert loader.pin_memory and loader.pin_memory_device == "npu"  # else torch < 2.9 pins for CUDA only
    monkeypatch.setattr(devices, "TORCH_VERSION", (2, 9))
    loader = build_pipeline(task, "train", True, CPU, ONE, 1).loader
    assert loader.pin_memory and loader.pin_memory_device == ""  # torch pins for the current accelerator
