"""One training update, readable top to bottom, and one validation step.

accumulate → backward → all-reduce the sample size → divide gradients → clip → step → LR → log.
AMP (autocast + loss scaling) and DDP (sync only on the last accumulated batch) wrap around it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

from w2v2 import devices
from w2v2.train.loss_scaler import LossScaler
from w2v2.train.lr_schedules import LrScheduler
from w2v2.train.task import Criterion, Model

logger = logging.getLogger(__name__)


@dataclass
class UpdateResult:
    """Summed logging outputs of one update (all ranks), and what the step did."""

    stats: Dict[str, float]
    grad_norm: float
    stepped: bool  # False when the gradients overflowed and the update was skipped


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


def sum_logs(logs: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Numeric logging outputs summed over batches (`batches` counts the batches that count)."""
    total: Dict[str, float] = {}
    for log in logs:
        for key, value in log.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0.0) + float(value)
    return total


# Logged outputs that count things: summed over ranks exactly, as integers.
COUNT_KEYS = frozenset({"sample_size", "ntokens", "nsentences", "batches", "updates", "overflows", "correct",
                        "count", "c_errors", "c_total", "w_errors", "wv_errors", "w_total"})


def all_reduce_sums(stats: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Sum `stats` over ranks (every rank must pass the same keys): the counts of `COUNT_KEYS` as int64,
    the rest as float32, the dtypes HCCL reduces (it has no float64), as the Ascend fork does."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stats
    count_keys = sorted(k for k in stats if k in COUNT_KEYS)
    sum_keys = sorted(k for k in stats if k not in COUNT_KEYS)
    counts = torch.tensor([round(stats[k]) for k in count_keys], dtype=devices.COUNT_DTYPE, device=device)
    sums = torch.tensor([stats[k] for k in sum_keys], dtype=devices.SUM_DTYPE, device=device)
    devices.all_reduce_stats(counts, sums)
    return {**dict(zip(count_keys, map(float, counts.tolist()))), **dict(zip(sum_keys, sums.tolist()))}


class Trainer:
    """Owns the model (and its DDP wrapper), optimizer, LR schedule, loss scaler and update count;
    frees the accelerator's memory cache after every `empty_cache_freq`-th update (0: never)."""

    def __init__(self, model: Model, criterion: Criterion, optimizer: torch.optim.Optimizer,
                 lr_scheduler: LrScheduler, device: torch.device, *, clip_norm: float = 0.0,
                 precision: devices.Precision = devices.Precision(None, False),
                 scaler: Optional[LossScaler] = None, ddp: Optional[torch.nn.Module] = None,
                 forward: Optional[torch.nn.Module] = None, empty_cache_freq: int = 0) -> None:
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        self.lr_scheduler, self.device, self.clip_norm = lr_scheduler, device, clip_norm
        self.precision, self.empty_cache_freq = precision, empty_cache_freq
        self.scaler = scaler or LossScaler(device, precision.loss_scaling)
        self.ddp = ddp
        # what the criterion calls: the model, its DDP wrapper, or a torch.compile of either
        self.forward_module = next(m for m in (forward, ddp, model) if m is not None)
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.num_updates = 0

    def release_ddp(self) -> None:
        """At the end of a run, drop the DDP wrapper (and a compile of it), which hold the process group, so
        that `setup.leave_process_group` can stop the group's threads. No update may follow."""
        if self.ddp is not None:
            self.ddp = None
            self.forward_module = self.model

    def _autocast(self, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients only on the last accumulated batch."""
        if last or self.ddp is None:
            return contextlib.nullcontext()
        return self.ddp.no_sync()  # type: ignore[operator]

    def train_step(self, batches: Sequence[Dict[str, Any]]) -> UpdateResult:
        """One update from `batches` (update_freq of them); returns the summed logs of all ranks."""
        self.model.train()
        self.model.set_num_updates(self.num_updates)
        logs: List[Dict[str, Any]] = []
        devices.clear_overflow(self.device)
        for i, batch in enumerate(batches):
            batch = move_to(batch, self.device)
            repeated = bool(batch.get("repeated", False))  # a filler batch that evens out the ranks
            with self._no_sync(i == len(batches) - 1):
                with self._autocast(self.precision.autocast_dtype):
                    out = self.criterion(self.forward_module, self.model, batch)
                self.scaler.scale(out.loss * (0.0 if repeated else 1.0)).backward()
            logs.append(_batch_logs(out.logs, batch, repeated))
        stats = all_reduce_sums(sum_logs(logs), self.device)
        grad_norm = self._normalise_and_clip(stats.get("sample_size", 0.0))
        # Every rank skips together: a saturating NPU flags an overflow that only its own kernels saw.
        overflows = all_reduce_sums({"overflows": float(devices.overflowed(self.device, grad_norm))}, self.device)
        stepped = overflows["overflows"] == 0
        if stepped:
            self.scaler.step(self.optimizer)
        self.scaler.finish_step(overflow=not stepped)
        self.optimizer.zero_grad(set_to_none=True)
        if not stepped:
            if self.scaler.is_enabled():  # without a scaler the run's health monitor reports it
                logger.warning("gradient overflow (norm %s): update skipped, loss scale now %s", grad_norm,
                               self.loss_scale())
            return UpdateResult(stats, grad_norm, stepped)
        self.num_updates += 1
        self.lr_scheduler.step_update(self.num_updates)
        freq = self.empty_cache_freq
        if freq > 0 and self.num_updates % freq == 1 % freq:  # fairseq's: after updates 1, freq + 1, ...
            devices.empty_cache(self.device)
        return UpdateResult(stats, grad_norm, stepped)

    def _normalise_and_clip(self, sample_size: float) -> float:
        """Unscale, turn DDP's mean into a sum divided by the global sample size, clip; returns the norm."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        factor = self.world_size / sample_size if sample_size > 0 else 0.0
        for p in params:
            p.grad.mul_(factor)
        max_norm = self.clip_norm if self.clip_norm > 0 else float("inf")
        if not params:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    @torch.no_grad()
    def valid_step(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Logging outputs of one validation batch (eval mode, no gradients)."""
        self.model.eval()
        batch = move_to(batch, self.device)
        with self._autocast(self.precision.validation_dtype):
            out = self.criterion(self.model, self.model, batch)
        return _batch_logs(out.logs, batch, bool(batch.get("repeated", False)))

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def loss_scale(self) -> Optional[float]:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else None


def _batch_logs(logs: Dict[str, Any], batch: Dict[str, Any], repeated: bool) -> Dict[str, Any]:
    """The criterion's logs plus the batch's audio seconds and padding share; all zero for a
    repeated batch, whose keys must still match the other ranks' for the all-reduce."""
    extra = {k: float(batch[k]) for k in ("audio_seconds", "padding_fraction") if k in batch}
    merged = {**logs, **extra, "batches": 1.0}
    if repeated:
        return {k: 0.0 * v for k, v in merged.items() if isinstance(v, (int, float))}
    return merged
