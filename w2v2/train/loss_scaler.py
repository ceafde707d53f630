"""Dynamic loss scaling for float16 training: the device's GradScaler, its scale set by fairseq's rule.

fairseq's fp16 mode (`DynamicLossScaler`) halves the scale after an overflow once the overflows since
the last rescale make up at least `fp16_scale_tolerance` of the updates since then, never below
`threshold_loss_scale`; it doubles the scale after `scale_window` updates without overflow, and stops
training when the scale would fall to `min_loss_scale` or below. Its amp mode is torch's GradScaler
(no tolerance, no threshold) with the same stop. With tolerance 0 and no threshold both rules give
the same scales, so one rule serves both modes.

The scaler underneath is the device's own (`devices.grad_scaler`): torch_npu's on the NPU, whose
overflow check reads the float status that saturation mode sets instead of producing inf.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import torch

from w2v2 import devices
from w2v2.errors import W2v2Error
from w2v2.train.config import CommonConfig

logger = logging.getLogger(__name__)

AMP_WINDOW = 2000  # torch's growth interval, which fairseq's amp keeps when amp_scale_window is null


class LossScaler:
    """The device's GradScaler, its next scale computed here (`finish_step`) and handed to its `update`."""

    def __init__(self, device: Any, enabled: bool, *, init_scale: float = 128.0, scale_window: int = 2000,
                 tolerance: float = 0.0, threshold: Optional[float] = None, min_loss_scale: float = 1e-4) -> None:
        device = torch.device(device) if isinstance(device, str) else device
        self.grad_scaler = devices.grad_scaler(device, init_scale, scale_window, enabled)
        self.scale_window, self.tolerance = scale_window, tolerance
        self.threshold, self.min_loss_scale = threshold, min_loss_scale
        # fairseq's counters: updates seen, and the update of the last overflow and of the last rescale.
        self.iteration, self.last_overflow, self.last_rescale, self.overflows_since_rescale = 0, -1, -1, 0

    def is_enabled(self) -> bool:
        """Whether gradients are scaled at all."""
        return bool(self.grad_scaler.is_enabled())

    def get_scale(self) -> float:
        """The current loss scale (1.0 when disabled)."""
        return float(self.grad_scaler.get_scale())

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` times the scale."""
        return self.grad_scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the optimizer's gradients by the scale."""
        self.grad_scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's step on unscaled gradients (the scaler's own overflow check still applies)."""
        self.grad_scaler.step(optimizer)

    def finish_step(self, overflow: bool) -> None:
        """End an update (after `step`, or instead of it when `overflow`): set the next scale.
        Raises W2v2Error when an overflow would bring the scale to `common.min_loss_scale` or below."""
        if not self.is_enabled():
            return
        scale = self.get_scale()
        if overflow:
            scale = self._after_overflow(scale)
        elif (self.iteration - self.last_overflow) % self.scale_window == 0:
            scale *= 2.0
            self.last_rescale = self.iteration
        self.iteration += 1
        self.grad_scaler.update(float(scale))

    def _after_overflow(self, scale: float) -> float:
        """The scale after an overflow: halved (not below the threshold) once the tolerance is used up."""
        since_rescale = self.iteration - self.last_rescale
        self.last_overflow = self.iteration
        self.overflows_since_rescale += 1
        if self.overflows_since_rescale / since_rescale >= self.tolerance:
            scale = scale / 2.0 if self.threshold is None else max(scale / 2.0, self.threshold)
            self.last_rescale, self.overflows_since_rescale = self.iteration, 0
        if scale <= self.min_loss_scale:
            raise W2v2Error(
                f"the float16 loss scale must stay above `common.min_loss_scale` ({self.min_loss_scale:g}), but "
                f"the gradients overflowed again and it would fall to {scale:g}: the loss is probably exploding. "
                "Lower the learning rate, clip the gradients (`optimization.clip_norm`), use larger batches, "
                "or train in bf16 or fp32."
            )
        return scale

    def state_dict(self) -> Dict[str, Any]:
        """torch's entries plus fairseq's counters under `fairseq` (empty when disabled)."""
        state = self.grad_scaler.state_dict()
        if state:
            state["fairseq"] = {"iteration": self.iteration, "last_overflow": self.last_overflow,
                                "last_rescale": self.last_rescale,
                                "overflows_since_rescale": self.overflows_since_rescale}
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a `state_dict`; one of a plain GradScaler keeps its growth count towards the next doubling."""
        if not self.is_enabled():
            return
        # torch_npu's scaler also requires its `dynamic` entry, which CUDA and CPU scalers do not write
        # and torch's ignores.
        self.grad_scaler.load_state_dict({"dynamic": True, **state_dict})
        counters = state_dict.get("fairseq")
        if counters is None:
            # `_growth_tracker` updates since the last overflow or doubling: as if that overflow came just before.
            counters = {"iteration": 0, "last_overflow": -1 - int(state_dict.get("_growth_tracker", 0)),
                        "last_rescale": -1, "overflows_since_rescale": 0}
        self.iteration, self.last_overflow = int(counters["iteration"]), int(counters["last_overflow"])
        self.last_rescale = int(counters["last_rescale"])
        self.overflows_since_rescale = int(counters["overflows_since_rescale"])


def loss_scaler(common: CommonConfig, device: torch.device, enabled: bool, default_window: int) -> LossScaler:
    """The scaler of `common.fp16` (its fp16_* settings, `default_window` when fp16_scale_window is null)
    or of `common.amp` (amp_init_scale, amp_scale_window, no tolerance or threshold, as in fairseq)."""
    if not common.amp:
        return LossScaler(device, enabled, init_scale=common.fp16_init_scale,
                          scale_window=common.fp16_scale_window or default_window,
                          tolerance=common.fp16_scale_tolerance, threshold=common.threshold_loss_scale,
                          min_loss_scale=common.min_loss_scale)
    if common.amp_scale_window is not None or common.fp16_init_scale != common.amp_init_scale:
        logger.warning(
            "common.amp: the first loss scale is amp_init_scale (%s) and it doubles every amp_scale_window (%s) "
            "updates without overflow, as fairseq's help says; fairseq 0.12.2's code instead starts from "
            "fp16_init_scale (%s) and, when amp_scale_window is set, doubles every amp_init_scale updates.",
            common.amp_init_scale, common.amp_scale_window or AMP_WINDOW, common.fp16_init_scale)
    return LossScaler(device, enabled, init_scale=common.amp_init_scale,
                      scale_window=common.amp_scale_window or AMP_WINDOW, min_loss_scale=common.min_loss_scale)
