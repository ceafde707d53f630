"""Distractor sampling for the contrastive task."""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _draw(bsz: int, num: int, count: int, high: int, device: torch.device) -> torch.Tensor:
    """(B, num*count) indices in [0, high), never the index of the frame itself."""
    own = torch.arange(num, device=device).repeat_interleave(count)
    idx = torch.randint(0, high - 1, (bsz, num * count), device=device)
    return idx + (idx >= own).long()  # skip the positive by shifting the upper part up by one


def sample_negatives(
    y: torch.Tensor,
    num: int,
    n_negatives: int,
    cross_sample_negatives: int = 0,
    padding_count: int = 0,
    indices: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distractors (K, B, num, C) for each of the `num` target frames, and their row indices.

    Same-utterance distractors come uniformly (with replacement) from the other frames of the
    utterance; cross-sample ones from any frame of the batch. `indices` (B, num*K) injects rows of
    `y.reshape(B*T, C)` instead of drawing them.
    """
    bsz, tsz, fsz = y.shape
    flat = y.reshape(-1, fsz)
    total = n_negatives + cross_sample_negatives
    if indices is None:
        high = tsz - padding_count
        if high <= 1:
            raise ValueError(f"need at least 2 unpadded target frames to draw distractors, got {high}")
        with torch.no_grad():
            parts = []
            if n_negatives > 0:
                offsets = torch.arange(bsz, device=y.device).unsqueeze(1) * high
                parts.append(_draw(bsz, num, n_negatives, high, y.device) + offsets)
            if cross_sample_negatives > 0:
                parts.append(_draw(bsz, num, cross_sample_negatives, tsz * bsz, y.device))
            indices = torch.cat(parts, dim=1)
    negs = flat[indices.reshape(-1)].view(bsz, num, total, fsz).permute(2, 0, 1, 3)  # (K, B, num, C)
    return negs, indices
