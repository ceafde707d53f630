"""Learning-rate schedules of fairseq's `lr_scheduler` group: polynomial_decay, tri_stage, fixed.

Step semantics, as fairseq's trainer has them: the schedule is asked for the lr at the start of
every epoch and after every update, always with the number of updates done so far. So the update
that runs when `num_updates` updates are done uses `lr_at(num_updates)`: the first one uses
`lr_at(0)`, which is 0 for polynomial_decay with warmup and `init_lr_scale * lr` for tri_stage.
The expressions below follow fairseq's operation order so that the floats are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from w2v2.errors import W2v2Error
from w2v2.schema import Group, at_least, default_only, linked, no_effect, require

ANNEAL = "epoch-based annealing is not implemented"


@dataclass
class PolynomialDecayConfig(Group):
    """`lr_scheduler._name: polynomial_decay`: linear warmup from 0, then polynomial decay."""

    _name: str = "polynomial_decay"
    warmup_updates: int = 0  # updates of linear warmup from 0 to the peak lr
    force_anneal: Optional[int] = default_only(None, ANNEAL)
    end_learning_rate: float = 0.0  # lr reached at total_num_update and kept after it
    power: float = 1.0  # exponent of the decay; 1 = linear
    total_num_update: Optional[float] = linked("optimization.max_update")  # end of the decay
    lr: Optional[List[float]] = linked("optimization.lr")  # peak lr

    def check(self, where: str) -> None:
        _single_lr(self.lr, where)
        at_least(self.warmup_updates, 0, f"{where}.warmup_updates")
        require(self.total_num_update is not None and self.total_num_update > 0, f"{where}.total_num_update",
                f"must be > 0 (it defaults to `optimization.max_update`, so set one of them), but is "
                f"{self.total_num_update} instead.")

    def lr_at(self, num_updates: int) -> float:
        """The lr of the update that starts after `num_updates` updates."""
        peak, warmup, total = _peak(self), self.warmup_updates, self.total_num_update
        if warmup > 0 and num_updates <= warmup:
            return num_updates / float(warmup) * peak
        if num_updates >= total:
            return self.end_learning_rate
        pct_remaining = 1 - (num_updates - warmup) / (total - warmup)
        return (peak - self.end_learning_rate) * pct_remaining**self.power + self.end_learning_rate


@dataclass
class TriStageConfig(Group):
    """`lr_scheduler._name: tri_stage`: linear warmup, hold, exponential decay, then constant."""

    _name: str = "tri_stage"
    warmup_steps: int = 0  # updates of linear warmup from init_lr_scale * lr to lr
    hold_steps: int = 0  # updates at the peak lr
    decay_steps: int = 0  # updates of exponential decay down to final_lr_scale * lr
    phase_ratio: Optional[List[float]] = None  # if set, the three step counts as fractions of max_update
    init_lr_scale: float = 0.01  # warmup starts at this fraction of the peak
    final_lr_scale: float = 0.01  # decay ends at this fraction of the peak (fairseq's YAMLs use 0.05)
    max_update: Optional[float] = linked("optimization.max_update")  # base of phase_ratio
    lr: Optional[List[float]] = linked("optimization.lr")  # peak lr

    def check(self, where: str) -> None:
        _single_lr(self.lr, where)
        if self.phase_ratio is not None:
            require(len(self.phase_ratio) == 3 and math.isclose(sum(self.phase_ratio), 1.0), f"{where}.phase_ratio",
                    f"must be three fractions that add up to 1, but is {list(self.phase_ratio)} instead.")
            require(self.max_update is not None and self.max_update > 0, f"{where}.max_update", "must be > 0 when "
                    f"phase_ratio is set (it defaults to `optimization.max_update`), but is {self.max_update} instead.")
        for name, steps in zip(("warmup_steps", "hold_steps", "decay_steps"), self.steps()):
            at_least(steps, 0, f"{where}.{name}")
        # fairseq divides by decay_steps and takes log(final_lr_scale) unconditionally.
        require(self.steps()[2] > 0, f"{where}.decay_steps", "must be > 0 (or set phase_ratio), but is 0 instead.")
        require(self.final_lr_scale > 0, f"{where}.final_lr_scale", f"must be > 0, but is {self.final_lr_scale}.")

    def steps(self) -> Tuple[int, int, int]:
        """The (warmup, hold, decay) update counts, from phase_ratio when it is set."""
        if self.phase_ratio is None:
            return self.warmup_steps, self.hold_steps, self.decay_steps
        total = self.max_update or 0
        return tuple(int(total * ratio) for ratio in self.phase_ratio)  # type: ignore[return-value]

    def lr_at(self, num_updates: int) -> float:
        """The lr of the update that starts after `num_updates` updates."""
        peak = _peak(self)
        init_lr, final_lr = self.init_lr_scale * peak, self.final_lr_scale * peak
        warmup, hold, decay = self.steps()
        if num_updates < warmup:
            return init_lr + (peak - init_lr) / warmup * num_updates
        if num_updates < warmup + hold:
            return peak
        if num_updates <= warmup + hold + decay:
            decay_factor = -math.log(self.final_lr_scale) / decay
            return peak * math.exp(-decay_factor * (num_updates - warmup - hold))
        return final_lr


@dataclass
class FixedConfig(Group):
    """`lr_scheduler._name: fixed`: a constant lr after an optional linear warmup."""

    _name: str = "fixed"
    force_anneal: Optional[int] = default_only(None, ANNEAL)
    lr_shrink: float = no_effect(0.1)  # only used by force_anneal
    warmup_updates: int = 0  # updates of linear warmup, reaching lr at update warmup_updates - 1
    lr: Optional[List[float]] = linked("optimization.lr")  # the lr

    def check(self, where: str) -> None:
        _single_lr(self.lr, where)
        at_least(self.warmup_updates, 0, f"{where}.warmup_updates")

    def lr_at(self, num_updates: int) -> float:
        """The lr of the update that starts after `num_updates` updates."""
        peak, warmup = _peak(self), self.warmup_updates
        if warmup > 0 and num_updates < warmup:
            return (num_updates + 1) / float(warmup) * peak
        return peak


LrSchedulerConfig = Union[PolynomialDecayConfig, TriStageConfig, FixedConfig]
LR_SCHEDULER_CONFIGS = {"polynomial_decay": PolynomialDecayConfig, "tri_stage": TriStageConfig, "fixed": FixedConfig}


class LrScheduler:
    """Sets an optimizer's lr from the update count; its state is what fairseq checkpoints hold."""

    def __init__(self, cfg: LrSchedulerConfig, optimizer: Optional[object] = None) -> None:
        self.cfg = cfg
        self.optimizer = optimizer
        self.best: Optional[float] = None  # lowest validation loss seen, as fairseq records it
        self.step_update(0)

    def lr_at(self, num_updates: int) -> float:
        """The lr of the update that starts after `num_updates` updates."""
        return self.cfg.lr_at(num_updates)

    def step_update(self, num_updates: int) -> float:
        """Set the optimizer's lr for the next update (call after every update) and return it."""
        lr = self.lr_at(num_updates)
        for group in [] if self.optimizer is None else self.optimizer.param_groups:  # type: ignore[attr-defined]
            group["lr"] = lr
        return lr

    def step(self, val_loss: Optional[float] = None) -> None:
        """Record an end-of-epoch validation loss (the lr depends on updates only)."""
        if val_loss is not None:
            self.best = val_loss if self.best is None else min(self.best, val_loss)

    def state_dict(self) -> dict:
        """fairseq's `lr_scheduler_state`: `{"best": ...}`."""
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (or fairseq stored)."""
        self.best = state.get("best")


def _peak(cfg: LrSchedulerConfig) -> float:
    if not cfg.lr:
        raise W2v2Error("`lr_scheduler.lr` is unset; a loaded config links it to `optimization.lr`.")
    return float(cfg.lr[0])


def _single_lr(lr: Optional[List[float]], where: str) -> None:
    require(lr is not None and len(lr) == 1 and lr[0] >= 0, f"{where}.lr", "(from `optimization.lr`) must hold "
            f"one lr >= 0 (per-epoch lr lists are not supported), but is {lr} instead.")
