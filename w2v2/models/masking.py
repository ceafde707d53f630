"""Span masking as fairseq draws it: time spans over frames, channel spans over features."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch


def torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's RNG, so `torch.manual_seed` fixes the masks too."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _span_lengths(rng: np.random.Generator, count: int, length: int, selection: str, other: float) -> np.ndarray:
    """Lengths of `count` spans under fairseq's `mask_selection` distributions."""
    if selection == "static":
        return np.full(count, length)
    if selection == "uniform":
        return rng.integers(int(other), length * 2 + 1, size=count)
    if selection == "normal":
        return np.maximum(1, np.round(rng.normal(length, other, size=count)).astype(int))
    return np.round(rng.poisson(length, size=count)).astype(int)  # poisson


def _span_starts_overlapping(rng: np.random.Generator, size: int, lengths: np.ndarray) -> np.ndarray:
    """Distinct starts from [0, size - shortest span), spans may overlap."""
    count = len(lengths)
    shortest = int(lengths.min())
    if size - shortest <= count:
        shortest = size - count - 1
    return rng.choice(size - shortest, count, replace=False)


def _span_starts_apart(rng: np.random.Generator, size: int, lengths: np.ndarray, min_space: int) -> List[int]:
    """Starts of non-overlapping spans, longest first, each put in a free gap chosen by its room."""
    gaps = [(0, size)]  # free regions [start, end)
    starts: List[int] = []
    for length in sorted(lengths.tolist(), reverse=True):
        room = np.array([max(0, e - s - length + 1) for s, e in gaps], dtype=float)
        if room.sum() == 0:
            break
        s, e = gaps.pop(int(rng.choice(len(gaps), p=room / room.sum())))
        start = int(rng.integers(s, e - length + 1))
        starts.append(start)
        gaps += [g for g in ((s, start - min_space), (start + length + min_space, e)) if g[1] > g[0]]
    return starts


def compute_mask_indices(
    shape: Tuple[int, int],
    padding_mask: Optional[torch.Tensor],
    mask_prob: float,
    mask_length: int,
    selection: str = "static",
    other: float = 0.0,
    min_masks: int = 0,
    no_overlap: bool = False,
    min_space: int = 0,
    require_same_masks: bool = True,
    mask_dropout: float = 0.0,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Boolean (B, T) mask of spans, drawn per utterance over its unpadded length.

    Each utterance of length T gets `max(min_masks, int(mask_prob * T / mask_length + U[0,1)))`
    spans; with `require_same_masks` every row is then subsampled to the batch's smallest count.
    """
    rng = rng if rng is not None else torch_seeded_rng()
    batch, total = shape
    rows = []
    for i in range(batch):
        size = total - int(padding_mask[i].long().sum()) if padding_mask is not None else total
        count = max(min_masks, int(mask_prob * size / float(mask_length) + rng.random()))
        lengths = _span_lengths(rng, count, mask_length, selection, other)
        if lengths.sum() == 0:
            lengths = np.array([min(mask_length, size - 1)])
        if no_overlap:
            starts, lengths = _span_starts_apart(rng, size, lengths, min_space), np.sort(lengths)[::-1]
        else:
            starts = _span_starts_overlapping(rng, size, lengths)
        frames = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)] or [np.zeros(0, int)])
        rows.append(np.unique(frames[frames < size]))
    mask = np.zeros((batch, total), dtype=bool)
    target = min(len(r) for r in rows) if require_same_masks else None
    for i, frames in enumerate(rows):
        if target is not None and len(frames) > target:
            frames = rng.choice(frames, target, replace=False)
        mask[i, frames] = True
        if mask_dropout > 0:
            masked = np.flatnonzero(mask[i])
            holes = int(np.rint(len(masked) * mask_dropout))
            mask[i, rng.choice(masked, holes, replace=False)] = False
    return mask
