"""Everything a run needs before its first update: processes, device, seeds, model, optimizer, data."""

from __future__ import annotations

import importlib
import logging
import os
import random
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from w2v2 import devices
from w2v2.data.datasets import AudioDataset
from w2v2.data.loader import build_dataloader, limit_threads
from w2v2.data.sampler import LengthBatchSampler
from w2v2.errors import W2v2Error
from w2v2.train.config import TrainConfig
from w2v2.train.loss_scaler import loss_scaler
from w2v2.train.lr_schedules import LrScheduler
from w2v2.train.optim import build_optimizer
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.train.task import Model, Task
from w2v2.train.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the run."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def process_info() -> ProcessInfo:
    """Rank and world size from torchrun's environment (one process without it)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return ProcessInfo(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), world,
                       int(env.get("LOCAL_WORLD_SIZE", str(world))))


def init_process_group(info: ProcessInfo, device: torch.device, timeout_s: int = -1,
                       init_method: Optional[str] = None) -> None:
    """Join the run's other processes with the device's backend: at torchrun's rendezvous (MASTER_ADDR/PORT
    from the environment), or at `init_method` (a `file://` or `tcp://` URL)."""
    if info.world_size == 1 or dist.is_initialized():
        return
    # DDP imports torch._dynamo, and that import keeps references to the process groups existing then (ten
    # to the default group on torch 2.13), which would stop `leave_process_group` from freeing the group
    importlib.import_module("torch._dynamo")
    timeout = timedelta(seconds=timeout_s) if timeout_s > 0 else timedelta(minutes=30)
    dist.init_process_group(devices.distributed_backend(device), init_method=init_method, rank=info.rank,
                            world_size=info.world_size, timeout=timeout)


def leave_process_group() -> None:
    """Destroy the process group, once nothing else holds it (`Trainer.release_ddp`), while the interpreter
    is whole. Gloo's worker threads free a finished collective's tensors a moment after the collective
    returns; one still at it when the interpreter finalizes cannot take the GIL and aborts the process
    (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#190489). Destroying the
    group's last reference joins those threads first."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_device(cfg: TrainConfig, info: ProcessInfo) -> torch.device:
    """`common.cpu` forces the CPU; otherwise `W2V2_DEVICE` (default: the best accelerator), one per
    local rank. `W2V2_MATMUL_PRECISION` (or the Ascend fork's `ALLOW_FP32` / `ALLOW_HF32`) = fp32 / hf32
    sets TF32 (CUDA) or HF32 (NPU) as `devices.set_matmul_precision` says. On the CPU, glibc is told to keep
    freed memory (`devices.keep_freed_cpu_memory`), or, where `model.checkpoint_activations` asks for memory
    over speed, to hand it back at once (`devices.return_freed_cpu_memory`)."""
    requested = "cpu" if cfg.common.cpu else os.environ.get("W2V2_DEVICE", "auto")
    mode = devices.matmul_mode(os.environ)
    device = devices.pick_device(requested, info.local_rank)
    devices.set_matmul_precision(device, mode)
    if devices.kind(device) == "cpu":
        _tune_cpu_malloc(cfg.model.checkpoint_activations)
    return device


def _tune_cpu_malloc(checkpoint_activations: bool) -> None:
    if checkpoint_activations:
        if devices.return_freed_cpu_memory():
            logger.info("model.checkpoint_activations: glibc hands each freed buffer of 4 MB or more back at once, "
                        "so the RSS follows the live tensors (new buffers cost page faults); "
                        "W2V2_KEEP_FREED_MEMORY=0 keeps glibc's defaults")
    elif devices.keep_freed_cpu_memory():
        logger.info("glibc keeps freed memory for reuse (mmap threshold 1 GiB, trim threshold 2 GiB): CPU steps "
                    "without page faults on new buffers; W2V2_KEEP_FREED_MEMORY=0 keeps glibc's defaults")


def build_trainer(cfg: TrainConfig, task: Task, device: torch.device, info: ProcessInfo) -> Trainer:
    """Model on `device` (DDP-wrapped with several processes), optimizer, schedule, precision."""
    model = task.build_model().to(device)
    ddp = None
    if info.world_size > 1:
        dt = cfg.distributed_training
        ids = [device.index] if device.type != "cpu" else None
        with warnings.catch_warnings():
            # torch >= 2.13 deprecates broadcast_buffers, but its replacement (forward_sync_buffers) still
            # syncs buffers at init: only broadcast_buffers keeps fairseq's meaning of False on every torch
            warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
            ddp = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=dt.bucket_cap_mb,
                                          find_unused_parameters=dt.find_unused_parameters or _needs_unused(model),
                                          broadcast_buffers=dt.broadcast_buffers)
    optimizer = build_optimizer(model, cfg.optimizer)
    precision = devices.precision(device, cfg.common.fp16, cfg.common.bf16, cfg.common.amp)
    update_freq = cfg.optimization.update_freq[0]
    scaler = loss_scaler(cfg.common, device, precision.loss_scaling,
                         default_window=max(1, int(2**14 / info.world_size / update_freq)))
    forward = None
    if cfg.common.compile:  # compiles lazily, at the first batch of each new shape
        forward = torch.compile(model if ddp is None else ddp, dynamic=cfg.common.compile_dynamic)
    return Trainer(model, task.criterion(), optimizer, LrScheduler(cfg.lr_scheduler, optimizer), device,
                   clip_norm=cfg.optimization.clip_norm, precision=precision, scaler=scaler, ddp=ddp,
                   forward=forward, empty_cache_freq=cfg.common.empty_cache_freq)


def _needs_unused(model: Model) -> bool:
    """Whether some parameters may get no gradient in a step, which DDP must be told about:
    LayerDrop, a frozen encoder, a frozen CNN (feature_grad_mult 0), or no masking (mask_emb)."""
    if isinstance(model, Wav2Vec2Ctc):
        frozen = model.cfg.freeze_finetune_updates > 0 or not model.cfg.apply_mask
        model = model.w2v_encoder.w2v_model
    else:
        frozen = False
    cfg = model.cfg
    return frozen or cfg.encoder_layerdrop > 0 or cfg.feature_grad_mult == 0 or cfg.mask_prob == 0


@dataclass
class DataPipeline:
    """A split's dataset, batch sampler and loader."""

    dataset: AudioDataset
    sampler: LengthBatchSampler
    loader: torch.utils.data.DataLoader
    generator: torch.Generator


def build_pipeline(task: Task, split: str, training: bool, device: torch.device, info: ProcessInfo,
                   seed: int) -> DataPipeline:
    """The loader of `split`, sharded over ranks; validation is ordered and never shuffled. Items too long
    for a batch are left out of training where fairseq leaves them out (`AudioDataset.drop_long_items`),
    and of validation only with `dataset.skip_invalid_size_inputs_valid_test`, else refused.
    (`w2v2 evaluate` reads the same validation limits from a checkpoint: `inference.evaluate.validation_batching`.)"""
    cfg = task.cfg.dataset
    dataset = task.dataset(split, training)
    _bucket(dataset, task.cfg.task.num_batch_buckets, device)
    max_tokens = cfg.max_tokens if training else (cfg.max_tokens_valid or cfg.max_tokens)
    batch_size = cfg.batch_size if training else (cfg.batch_size_valid or cfg.batch_size)
    drop_long = dataset.drop_long_items if training else cfg.skip_invalid_size_inputs_valid_test
    if not drop_long and not training:
        _refuse_long_items(dataset, split, max_tokens, "max_tokens_valid" if cfg.max_tokens_valid else "max_tokens")
    sampler = dataset.batch_sampler(max_tokens, batch_size, drop_long=drop_long, seed=seed, shuffle=training,
                                    num_replicas=info.world_size, rank=info.rank,
                                    batch_size_multiple=cfg.required_batch_size_multiple)
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = build_dataloader(dataset, sampler, num_workers=cfg.num_workers, generator=generator,
                              **devices.pin_memory(device))
    return DataPipeline(dataset, sampler, loader, generator)


def no_batch_message(data: DataPipeline, cfg: TrainConfig) -> str:
    """Why the training split has no batch: how many manifest lines were left out, for what, and the keys."""
    dataset, sampler = data.dataset, data.sampler
    listed = len(dataset) + dataset.num_skipped
    split = f"the training split {cfg.dataset.train_subset!r} ({Path(cfg.task.data) / cfg.dataset.train_subset}.tsv)"
    if listed == 0:
        return f"{split} lists no utterance, only its root line; add utterances or point `task.data` elsewhere."
    reasons = []
    if dataset.num_skipped:
        reasons.append(f"{dataset.num_skipped} are shorter than `task.min_sample_size` "
                       f"({cfg.task.min_sample_size} samples; lower it)")
    if sampler.num_dropped:
        reasons.append(f"{sampler.num_dropped} are longer than `dataset.max_tokens` ({sampler.max_tokens} samples; "
                       f"the shortest of them has {int(sampler.lengths.min())}; raise it)")
    return (f"{split} yields no batch: all {listed} of its utterances were left out: {' and '.join(reasons)}; "
            "training would make no update.")


def _bucket(dataset: AudioDataset, num_batch_buckets: int, device: torch.device) -> None:
    """`task.num_batch_buckets`, or on a device that compiles per shape (NPU) its default when the config
    leaves it at 0 and batches are padded."""
    buckets = num_batch_buckets or (devices.default_batch_buckets(device) if dataset.pads else 0)
    dataset.set_bucket_info(buckets)


def _refuse_long_items(dataset: AudioDataset, split: str, max_tokens: Optional[int], budget_key: str) -> None:
    """Raise W2v2Error when validation items are longer than the batch budget (fairseq fails on them too)."""
    too_long = dataset.longer_than(max_tokens)
    if len(too_long):
        raise W2v2Error(
            f"{len(too_long)} of {len(dataset)} items of validation split {split!r} are longer than "
            f"`dataset.{budget_key}` ({max_tokens} samples; the longest has "
            f"{int(dataset.batch_lengths[too_long].max())}). Set `dataset.skip_invalid_size_inputs_valid_test=true` "
            f"to leave them out of validation, or raise `dataset.{budget_key}`."
        )


def valid_pipelines(task: Task, device: torch.device, info: ProcessInfo, seed: int) -> Dict[str, DataPipeline]:
    """One pipeline per comma-separated `dataset.valid_subset` (none with `disable_validation`)."""
    cfg = task.cfg.dataset
    if cfg.disable_validation:
        return {}
    names = [name.strip() for name in cfg.valid_subset.split(",") if name.strip()]
    return {name: build_pipeline(task, name, False, device, info, seed) for name in names}


def thread_budget(info: ProcessInfo, device: torch.device, num_workers: int) -> Optional[int]:
    """Split the node's cores among its training processes, leaving cores to the data workers of a
    model that trains on the CPU; returns the intra-op thread count set, if any."""
    reserved = num_workers if device.type == "cpu" else 0
    if info.local_world_size > 1 or reserved:
        return limit_threads(info.local_world_size, reserved)
    return None

