"""The DataLoader around a dataset and its batch sampler, and a CPU thread budget per process."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
from typing import Any, Iterator

import torch
import torch.utils.data

from w2v2.data.datasets import AudioDataset
from w2v2.data.sampler import LengthBatchSampler
from w2v2.errors import W2v2Error

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
TRACEBACK_HEAD = "Traceback (most recent call last):"
LEAVE_SIGNAL = signal.SIGUSR1  # how the training process ends its workers at exit
WORKER_SIGNALS = {signal.SIGINT, signal.SIGTERM, LEAVE_SIGNAL}


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader, except that a W2v2Error raised in a worker process (a bad audio file) reaches
    the caller as the worker's own one-paragraph message; torch re-raises it with the worker's whole
    traceback pasted into the message."""

    def __iter__(self) -> Iterator[Any]:
        with _worker_signals_held():
            batches = super().__iter__()  # starts the workers (the first time only, when they persist)
        return _unwrapped(batches)


@contextlib.contextmanager
def _worker_signals_held() -> Iterator[None]:
    """Hold back the signals a worker handles while workers start: a child inherits the held set, so a
    signal sent before its `worker_init_fn` has set the handlers waits for them instead of killing it
    (then torch reports a dead worker). Held, not ignored: this process gets any that came meanwhile."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _unwrapped(batches: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from batches
    except W2v2Error as error:
        raise W2v2Error(worker_message(str(error))) from error


def worker_message(text: str) -> str:
    """The original message of a W2v2Error re-raised by torch from a worker (`text` itself otherwise):
    the lines after the last traceback's frame lines, less the exception's class name."""
    if TRACEBACK_HEAD not in text:
        return text
    last = text.rsplit(TRACEBACK_HEAD, 1)[1].splitlines()
    message = "\n".join(line for line in last if line and not line[0].isspace()).strip()
    return message.partition(f"{W2v2Error.__module__}.{W2v2Error.__qualname__}: ")[2] or message


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
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collater,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_ignore_stop_signals if num_workers else None,
        **options,
    )


def _end_workers_at_exit() -> None:
    """At exit multiprocessing sends daemon children SIGTERM and waits for them; our workers ignore it (see
    below), so workers still alive then (they persist across epochs) would hang the exit: ask them to leave."""
    for child in multiprocessing.active_children():
        if child.daemon and child.pid is not None:
            os.kill(child.pid, LEAVE_SIGNAL)


# atexit runs the last registered first: this runs before multiprocessing's own exit hook
atexit.register(_end_workers_at_exit)


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT and SIGTERM (a terminal's Ctrl-C reaches its whole process group, a scheduler's
    SIGTERM every process of the job) to the training process, which stops cleanly and then ends them."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(LEAVE_SIGNAL, lambda signum, frame: os._exit(0))  # a clean exit: torch reports no dead worker
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)  # held since the fork (see _worker_signals_held)


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
