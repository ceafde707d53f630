"""The DataLoader around a dataset and its batch sampler, and a CPU thread budget per process."""

from __future__ import annotations

import os
import signal

import torch
import torch.utils.data

from w2v2.data.datasets import AudioDataset
from w2v2.data.sampler import LengthBatchSampler
from w2v2.errors import W2v2Error

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_dataloader(
    dataset: AudioDataset,
    sampler: LengthBatchSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
    pin_memory_device: str = "",
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    generator: torch.Generator | None = None,
) -> torch.utils.data.DataLoader:
    """A loader yielding `dataset.collater` batches in `sampler` order.

    Workers stay alive across epochs when `persistent_workers` (the sampler runs in this process, so
    `sampler.set_epoch` still takes effect); `pin_memory` should be True only when batches go to an
    accelerator (`pin_memory_device` names it; `devices.pin_memory` gives both). Pass a `generator` so
    that making an iterator draws no number from torch's global RNG (a resumed run must see the same
    global random stream as an uninterrupted one).
    """
    if num_workers < 0:
        raise W2v2Error(f"`num_workers` must be 0 or more, but is {num_workers} instead.")
    options = {"persistent_workers": persistent_workers, "prefetch_factor": prefetch_factor} if num_workers else {}
    if pin_memory_device:
        options["pin_memory_device"] = pin_memory_device
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collater,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_ignore_stop_signals if num_workers else None,
        **options,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT and SIGTERM (a terminal's Ctrl-C reaches its whole process group, a scheduler's
    SIGTERM every process of the job) to the training process, which stops cleanly and then ends them."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def limit_threads(num_local_processes: int, reserved: int = 0) -> int:
    """Give this process its share of the node's CPU cores for intra-op threads; returns the count.

    With several training processes per node each would otherwise start one thread per core, and the
    oversubscribed cores make 8 devices slower than one. `reserved` cores per process are left to its
    DataLoader workers (when the model itself runs on the CPU): OpenMP threads that wait for a
    descheduled sibling make every small kernel take milliseconds (measured: 12x slower steps on
    2 busy cores). An `OMP_NUM_THREADS` already set (by the user or a launcher) wins; the variables set
    here reach DataLoader workers and other child processes.
    """
    if num_local_processes < 1:
        raise W2v2Error(f"`num_local_processes` must be 1 or more, but is {num_local_processes} instead.")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    preset = os.environ.get("OMP_NUM_THREADS", "")
    share = max(1, cores // num_local_processes - reserved)
    threads = int(preset) if preset.isdigit() and int(preset) > 0 else share
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    torch.set_num_threads(threads)
    return threads
