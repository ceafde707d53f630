"""Turning a list of dataset items into a fairseq-shaped batch: crop (pretraining) or pad (fine-tuning).

An item is a dict with `id` (int), `epoch` (int), `repeated` (bool), `source` (1-D float tensor) and,
for fine-tuning, `target` (1-D long tensor). Batches are the dicts fairseq's criteria read, plus
`audio_seconds`, `padding_fraction` and `cropped_fraction` for logging and `repeated` (True for a
batch the sampler repeated to even out ranks).

Padded batches may be padded further, to a bucket length (fairseq's `task.num_batch_buckets`), so that
an epoch has only a few distinct shapes: accelerators that compile kernels per shape (Ascend NPUs)
then compile a few times instead of once per batch.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

Item = Dict[str, Any]
Batch = Dict[str, Any]


def crop_offset(seed: int, epoch: int, index: int, excess: int) -> int:
    """Start of a random crop that removes `excess` samples, the same for every (seed, epoch, index)."""
    return int(np.random.default_rng((seed, epoch, index)).integers(0, excess + 1))


def bucket_boundaries(lengths: np.ndarray, num_buckets: int) -> np.ndarray:
    """fairseq's buckets: the distinct lengths at the 1/N, 2/N, ..., N/N quantiles (taking the lower
    value) of the items' lengths, N = `num_buckets`; the last is the longest length."""
    quantiles = np.percentile(np.asarray(lengths), np.linspace(0, 100, num_buckets + 1), method="lower")
    return np.unique(quantiles[1:]).astype(np.int64)


def bucketed_lengths(lengths: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Each length raised to the smallest bucket boundary at or above it."""
    return boundaries[np.searchsorted(boundaries, np.asarray(lengths), side="left")]


def collate_cropped(items: Sequence[Item], max_sample_size: int, seed: int, sample_rate: int,
                    pad: bool = False, pad_to: int = 0) -> Batch:
    """Pretraining batch: every source cropped to `min(shortest, max_sample_size)`, no padding; with `pad`
    (fairseq's `task.enable_padding`) cropped to `min(longest, max_sample_size)` and shorter ones padded,
    to `pad_to` columns when that is longer (a bucket length)."""
    lengths = [len(item["source"]) for item in items]
    size = min(max(lengths) if pad else min(lengths), max_sample_size)
    crops = []
    for item in items:
        start = crop_offset(seed, item["epoch"], item["id"], max(0, len(item["source"]) - size))
        crops.append(item["source"][start : start + size])
    if not pad:
        source = torch.stack(crops)
        return _batch(items, {"source": source}, kept=source.numel(), sample_rate=sample_rate)
    source, kept = pad_sequences(crops, 0, pad_to)
    # (B, T): True where the column lies past the utterance's end.
    padding_mask = torch.arange(source.shape[1])[None, :] >= kept[:, None]
    return _batch(items, {"source": source, "padding_mask": padding_mask}, kept=int(kept.sum()), sample_rate=sample_rate)


def collate_padded(items: Sequence[Item], pad_index: int, sample_rate: int, pad_to: int = 0) -> Batch:
    """Fine-tuning batch: sources zero-padded to the longest, or to `pad_to` columns when that is longer
    (mask True = padding); targets padded to the longest."""
    source, lengths = pad_sequences([item["source"] for item in items], 0, pad_to)
    # (B, T): True where the column lies past the utterance's end.
    padding_mask = torch.arange(source.shape[1])[None, :] >= lengths[:, None]
    net_input = {"source": source, "padding_mask": padding_mask}
    batch = _batch(items, net_input, kept=int(lengths.sum()), sample_rate=sample_rate)
    target, target_lengths = pad_sequences([item["target"] for item in items], pad_index)
    batch.update(target=target, target_lengths=target_lengths, ntokens=int(target_lengths.sum()))
    return batch


def pad_sequences(sequences: Sequence[torch.Tensor], pad_value: int,
                  min_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B × max(longest, `min_length`) tensor right-padded with `pad_value`, lengths) of 1-D tensors."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    columns = max(int(lengths.max()), min_length)
    padded = torch.full((len(sequences), columns), pad_value, dtype=sequences[0].dtype)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    return padded, lengths


def _batch(items: Sequence[Item], net_input: Dict[str, torch.Tensor], kept: int, sample_rate: int) -> Batch:
    """The batch dict around `net_input`; `kept` counts the real (unpadded, uncropped) samples in it."""
    loaded = sum(len(item["source"]) for item in items)
    slots = net_input["source"].numel()
    return {
        "id": torch.tensor([item["id"] for item in items], dtype=torch.long),
        "net_input": net_input,
        "nsentences": len(items),
        "audio_seconds": kept / sample_rate,
        "padding_fraction": 1.0 - kept / slots if slots else 0.0,
        "cropped_fraction": 1.0 - kept / loaded if loaded else 0.0,
        "repeated": any(item["repeated"] for item in items),
    }
