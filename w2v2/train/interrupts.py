"""Stopping a run cleanly on SIGTERM or SIGINT: finish the update, save, exit with 128 + the signal.

A scheduler (Slurm, Kubernetes, torchrun's agent) sends SIGTERM and kills the job some seconds later;
Ctrl-C sends SIGINT. The first such signal only sets a flag: the run finishes the update in progress,
writes `checkpoint_last.pt` and raises `TrainingInterrupted`. A second signal exits at once, unsaved.
With several processes every rank must stop after the same update (a rank that leaves early blocks the
others in their next all-reduce), so after each update the ranks agree on the flag with one all-reduce,
and wait for rank 0's file before they leave; a collective that fails (a peer died or hung) is recognised.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A terminal's Ctrl-C reaches a torchrun worker twice (directly, and forwarded by the agent) within
# milliseconds; a repeat that soon is the same request, not a second one.
REPEAT_WINDOW_S = 1.0


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving; `exit_code` is 128 + the signal number (SIGTERM: 143)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """Catches SIGTERM and SIGINT while training (a context manager; the main thread only, where
    Python delivers signals) and records the first one; `agreed` shares it between ranks."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.first_at = 0.0
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self.first_at = signum, now
            logger.warning("%s received: finishing the current update, then saving checkpoint_last.pt "
                           "(send it again to exit at once, without saving).", signal_name(signum))
        elif now - self.first_at > REPEAT_WINDOW_S:
            # os.write, not logging: a handler may run while the logging lock is held
            os.write(2, f"{signal_name(signum)} received again: exiting at once, without saving.\n".encode())
            os._exit(128 + signum)

    def agreed(self, device: Any) -> Optional[int]:
        """The signal any rank received (the highest number when several did), else None; every rank
        must call this after the same update, with its torch device."""
        import torch  # here: the command line imports this module before it decides to train
        import torch.distributed as dist

        received = self.received or 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([float(received)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None


def collective_failure(error: RuntimeError) -> bool:
    """Whether `error` is a collective that timed out or lost its peer (gloo's, NCCL's and HCCL's wording)."""
    import torch.distributed as dist

    text = str(error).lower()
    return isinstance(error, dist.DistError) or any(
        word in text for word in ("timed out", "timeout", "connection closed", "connection reset", "broken pipe",
                                  "nccl", "hccl", "gloo"))


def all_ranks_wait() -> None:
    """A barrier of all ranks (nothing with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
