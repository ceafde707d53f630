"""Audio datasets over a fairseq manifest: cropped batches for pretraining, padded ones with targets
for fine-tuning.

Items are looked up by the `ItemKey`s the `LengthBatchSampler` yields; the key's epoch seeds the
random crop, so crops are the same for a (seed, epoch, index) in any worker and after a resume.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from w2v2.data import collate
from w2v2.data.audio import read_audio
from w2v2.data.dictionary import Dictionary
from w2v2.data.labels import read_labels
from w2v2.data.manifest import read_manifest
from w2v2.data.sampler import ItemKey, LengthBatchSampler
from w2v2.errors import W2v2Error

logger = logging.getLogger(__name__)

Entry = Tuple[str, int]  # (path relative to the manifest root, number of frames)


class AudioDataset(torch.utils.data.Dataset):
    """Manifest entries with at least `min_sample_size` frames, read as (optionally normalised) audio."""

    # Whether training leaves out items longer than `max_tokens` (with a warning) instead of failing, as
    # fairseq's audio datasets do: its fine-tuning dataset filters them, its pretraining dataset fails.
    drop_long_items = False

    def __init__(
        self,
        root: str | os.PathLike,
        entries: Sequence[Entry],
        *,
        sample_rate: int = 16000,
        min_sample_size: int = 0,
        normalize: bool = False,
    ) -> None:
        self.root = Path(root)
        self.sample_rate, self.normalize = sample_rate, normalize
        self.keep = np.array([frames >= min_sample_size for _, frames in entries], dtype=bool)
        self.paths: List[str] = [path for (path, _), kept in zip(entries, self.keep) if kept]
        self.sizes = np.array([frames for _, frames in entries], dtype=np.int64)[self.keep]
        self.num_skipped = len(entries) - len(self.paths)
        if self.num_skipped:
            logger.info(
                "skipped %d of %d files shorter than min_sample_size=%d frames.",
                self.num_skipped, len(entries), min_sample_size,
            )

    def __len__(self) -> int:
        return len(self.paths)

    # Whether batches are padded (and so can be padded further, to bucket lengths).
    pads = True
    bucketed: Optional[np.ndarray] = None  # each item's bucket length, once `set_bucket_info` made buckets

    def set_bucket_info(self, num_buckets: int) -> None:
        """fairseq's `task.num_batch_buckets`: pad every batch to the largest bucket length of its items,
        the buckets being quantiles of the items' batch lengths (0: no buckets)."""
        if num_buckets > 0 and not self.pads:
            raise W2v2Error("`task.num_batch_buckets` needs padded batches, but pretraining batches are cropped; "
                            "set `task.enable_padding=true` too, or `task.num_batch_buckets=0`.")
        self.bucketed = None
        if num_buckets > 0 and len(self):
            boundaries = collate.bucket_boundaries(self.batch_lengths, num_buckets)
            self.bucketed = collate.bucketed_lengths(self.batch_lengths, boundaries)
            logger.info("%d bucket(s) for the audio dataset: %s", len(boundaries), boundaries.tolist())

    def _pad_to(self, items: Sequence[collate.Item]) -> int:
        """The batch's bucket length (0 without buckets)."""
        return 0 if self.bucketed is None else int(max(self.bucketed[item["id"]] for item in items))

    @property
    def batch_lengths(self) -> np.ndarray:
        """Frames each item occupies in a batch: its size, bounded by the crop in pretraining."""
        return self.sizes

    def __getitem__(self, key: ItemKey | int) -> collate.Item:
        """The item's waveform (float32 tensor) with its id, epoch and repeat mark."""
        key = key if isinstance(key, ItemKey) else ItemKey(int(key), epoch=0)
        path = self.root / self.paths[key.index]
        samples = torch.from_numpy(read_audio(path, self.sample_rate))
        if len(samples) != self.sizes[key.index]:
            raise W2v2Error(
                f"{path} has {len(samples)} frames, but its manifest line says {self.sizes[key.index]}; "
                "the file changed since the manifest was written, so write the manifest again."
            )
        if self.normalize:
            samples = F.layer_norm(samples, samples.shape)
        return {"id": key.index, "epoch": key.epoch, "repeated": key.repeated, "source": samples}

    def collater(self, items: Sequence[collate.Item]) -> collate.Batch:
        """The batch of `items` (defined by the pretraining and fine-tuning datasets)."""
        raise NotImplementedError

    def longer_than(self, max_tokens: Optional[int]) -> np.ndarray:
        """Indices of the items too long for a batch of `max_tokens` frames (none without a budget)."""
        return np.flatnonzero(self.batch_lengths > max_tokens) if max_tokens is not None else np.zeros(0, np.int64)

    def batch_sampler(
        self, max_tokens: Optional[int], batch_size: Optional[int] = None, *, drop_long: Optional[bool] = None,
        **options: object,
    ) -> LengthBatchSampler:
        """A `LengthBatchSampler` over this dataset (options: seed, shuffle, num_replicas, rank,
        batch_size_multiple); items over the budget are left out when `drop_long` (default:
        `drop_long_items`), else refused. Without `max_tokens` only `batch_size` (default 1) bounds a
        batch, as in fairseq."""
        if max_tokens is None:
            max_tokens = int(self.batch_lengths.max(initial=1)) * (batch_size or 1)
        drop = self.drop_long_items if drop_long is None else drop_long
        return LengthBatchSampler(self.batch_lengths, max_tokens, batch_size, drop_long=drop, **options)


class PretrainingDataset(AudioDataset):
    """Unlabelled audio; a batch crops every item at a seeded random offset to the shortest one."""

    def __init__(
        self,
        root: str | os.PathLike,
        entries: Sequence[Entry],
        *,
        max_sample_size: Optional[int] = None,
        seed: int = 1,
        pad: bool = False,
        **options: object,
    ) -> None:
        if max_sample_size is not None and max_sample_size < 1:
            raise W2v2Error(f"`max_sample_size` must be a positive frame count, but is {max_sample_size} instead.")
        super().__init__(root, entries, **options)
        self.max_sample_size = sys.maxsize if max_sample_size is None else max_sample_size
        self.seed, self.pad, self.pads = seed, pad, pad

    @classmethod
    def from_manifest(cls, manifest: str | os.PathLike, **options: object) -> "PretrainingDataset":
        """The dataset of a manifest file (`train.tsv`); options as for the constructor."""
        parsed = read_manifest(manifest)
        return cls(parsed.root, parsed.entries, **options)

    @property
    def batch_lengths(self) -> np.ndarray:
        """Frames each item occupies in a batch: at most `max_sample_size`."""
        return np.minimum(self.sizes, self.max_sample_size)

    def collater(self, items: Sequence[collate.Item]) -> collate.Batch:
        """Cropped batch of `items`: `{"id", "net_input": {"source"}, "nsentences", ...}`."""
        return collate.collate_cropped(items, self.max_sample_size, self.seed, self.sample_rate, self.pad,
                                       self._pad_to(items))


class FinetuningDataset(AudioDataset):
    """Audio with one label line per manifest entry, encoded with `dictionary`; batches are padded."""

    drop_long_items = True

    def __init__(
        self,
        root: str | os.PathLike,
        entries: Sequence[Entry],
        labels: Sequence[str],
        dictionary: Dictionary,
        *,
        labels_name: str = "the label file",
        **options: object,
    ) -> None:
        if len(labels) != len(entries):
            raise W2v2Error(
                f"{labels_name} must have one line per manifest entry, {len(entries)} lines, "
                f"but has {len(labels)} instead."
            )
        super().__init__(root, entries, **options)
        self.dictionary = dictionary
        kept_labels = [line for line, kept in zip(labels, self.keep) if kept]
        self.targets, self.target_offsets = _encode(kept_labels, dictionary, labels_name)

    @classmethod
    def from_manifest(
        cls, manifest: str | os.PathLike, labels: str | os.PathLike, dictionary: Dictionary, **options: object
    ) -> "FinetuningDataset":
        """The dataset of a manifest (`train.tsv`) and its label file (`train.ltr`)."""
        parsed = read_manifest(manifest)
        lines = read_labels(labels, expected_lines=len(parsed.entries), manifest=manifest)
        return cls(parsed.root, parsed.entries, lines, dictionary, labels_name=str(labels), **options)

    def __getitem__(self, key: ItemKey | int) -> collate.Item:
        """The item's waveform and its encoded target."""
        item = super().__getitem__(key)
        start, end = self.target_offsets[item["id"]], self.target_offsets[item["id"] + 1]
        item["target"] = torch.from_numpy(self.targets[start:end])
        return item

    def collater(self, items: Sequence[collate.Item]) -> collate.Batch:
        """Padded batch: `{"id", "net_input": {"source", "padding_mask"}, "target", "target_lengths",
        "ntokens", "nsentences", ...}`."""
        return collate.collate_padded(items, self.dictionary.pad(), self.sample_rate, self._pad_to(items))


def _encode(lines: Sequence[str], dictionary: Dictionary, labels_name: str) -> Tuple[np.ndarray, np.ndarray]:
    """(all targets concatenated, offsets of each line) with one warning counting unknown symbols."""
    encoded, unknown, examples = [], 0, set()
    for line in lines:
        ids, num_unknown = dictionary.encode_line(line)
        encoded.append(ids.numpy())
        if num_unknown:
            unknown += num_unknown
            examples.update(symbol for symbol in line.split() if symbol not in dictionary.indices)
    if unknown:
        logger.warning(
            "%s: %d label symbols are not in the dictionary and become <unk> (for example %s).",
            labels_name, unknown, ", ".join(repr(symbol) for symbol in sorted(examples)[:5]),
        )
    offsets = np.cumsum([0] + [len(ids) for ids in encoded])
    targets = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64)
    return targets, offsets
