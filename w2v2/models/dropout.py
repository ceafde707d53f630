"""Dropout that is cheap on the CPU: torch's CPU dropout draws one Bernoulli number per element (~130 M/s on
2 cores, 14 % of a BASE pretraining step); this one cuts 16-bit uniform numbers out of 64-bit random words
(~1.2 G/s) and keeps an element when its number is at least `p` * 65536. The drop rate is `p` rounded to a
multiple of 1/65536 (off by at most 7.6e-6). Other devices keep torch's fused kernels."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 16  # the values a 16-bit random number takes


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the cheap random numbers on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:  # p = 1 and bad values: torch's result or torch's error
        return F.dropout(x, p, training=True)
    return _CpuDropout.apply(x, p)


def keep_mask(shape: torch.Size, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """True with probability 1 - p (rounded to 1/65536), from `generator` (default: the CPU's default one)."""
    numel = shape.numel()
    # all 64 bits random
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None, generator=generator)
    # as signed 16-bit numbers, [0, 65536) is shifted down by 32768
    return words.view(torch.int16)[:numel].view(shape) >= round(p * LEVELS) - LEVELS // 2


def apply_keep(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """x where `keep`, else 0, scaled by 1 / (1 - p): dropout with a given mask (and its gradient)."""
    return torch.where(keep, x, 0.0).mul_(1.0 / (1.0 - p))


def apply_keep_(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """`apply_keep` in place, for an `x` nobody else holds: no second buffer of x's size.

    `where` writing into x, not `x.mul_(keep)`, which would make a copy of the mask in x's dtype first."""
    return torch.where(keep, x, x.new_zeros(()), out=x).mul_(1.0 / (1.0 - p))


def seeded_keep_mask(shape: torch.Size, p: float, seed: int) -> torch.Tensor:
    """`keep_mask` from a generator seeded with `seed`: the same mask again for the same seed, which a
    backward can redraw instead of keeping it."""
    return keep_mask(shape, p, torch.Generator().manual_seed(seed))


class _CpuDropout(torch.autograd.Function):
    """x * keep / (1 - p); the backward applies the same kept elements and scale to the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        keep = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.p = p
        return apply_keep(x, keep, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return apply_keep(grad, keep, ctx.p), None


class Dropout(nn.Dropout):
    """`nn.Dropout` (same repr, no parameters) through `dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
