"""A batch sampler that groups utterances of similar length under a `max_tokens` budget.

Per epoch: items sorted by descending length (ties broken at random from `seed + epoch`), filled
greedily into batches while `items × longest ≤ max_tokens` (and `items ≤ batch_size`), then the batch
order is shuffled. As in fairseq's `batch_by_size`, a batch of `batch_size_multiple` items or more is
cut to a multiple of it, the items cut off starting the next batch, so every batch holds a multiple of
`batch_size_multiple` items or fewer than it. Unlike fairseq no item is ever lost: fairseq 0.12.2 may
drop up to `batch_size_multiple - 1` of the shortest items, we keep them as the last, small batch.

Sharding across `num_replicas` ranks: the sorted batches are cut into groups of `num_replicas`
neighbours, so that ranks taking the same step get batches of similar length, and the groups are
shuffled; rank `r` takes the `r`-th batch of every group. When the number of batches is not a multiple
of `num_replicas`, the last group is completed by repeating some of its own batches, so that every rank
makes the same number of steps. Those repeats are marked: their keys have `repeated=True` (a trainer may
zero their loss weight), and an epoch visits every utterance exactly once when they are ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data

from w2v2.errors import W2v2Error

logger = logging.getLogger(__name__)


class ItemKey(NamedTuple):
    """What the sampler hands the dataset: the item, the epoch (which seeds its crop), repeat mark."""

    index: int
    epoch: int
    repeated: bool = False


Step = List[Tuple[List[int], bool]]  # per rank: (batch indices, repeated)


@dataclass(frozen=True)
class _EpochPlan:
    epoch: int
    shuffle_batches: bool
    batches: List[List[int]]  # longest first, no repeats
    steps: List[Step]  # in iteration order


class LengthBatchSampler(torch.utils.data.Sampler):
    """Yields, per step, this rank's batch as a list of `ItemKey`s; see the module docstring."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        batch_size: Optional[int] = None,
        *,
        seed: int = 1,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_long: bool = False,
        batch_size_multiple: int = 1,
    ) -> None:
        _check_arguments(max_tokens, batch_size, num_replicas, rank, batch_size_multiple)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.batch_size, self.batch_size_multiple = max_tokens, batch_size, batch_size_multiple
        self.seed, self.shuffle = seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        too_long = self.lengths > max_tokens
        if too_long.any() and not drop_long:
            raise W2v2Error(
                f"`max_tokens` must be at least the longest item's length, {self.lengths.max()} frames, "
                f"but is {max_tokens} instead; raise `max_tokens` or lower `max_sample_size`."
            )
        self.kept = np.flatnonzero(~too_long)
        self.num_dropped = int(too_long.sum())
        if self.num_dropped:
            logger.warning(
                "%d of %d utterances are longer than max_tokens=%d frames and are left out of every epoch.",
                self.num_dropped, len(self.lengths), max_tokens,
            )
        self.epoch, self.start, self.shuffle_batches = 1, 0, shuffle
        self._plan_cache: Optional[_EpochPlan] = None

    def set_epoch(self, epoch: int, start: int = 0, shuffle: Optional[bool] = None) -> None:
        """Select the epoch to iterate; its first `start` batches on this rank are skipped (resuming).
        `shuffle=False` keeps this epoch's batches longest first (fairseq's `dataset.curriculum`: the
        training iterator shuffles only when `epoch > curriculum`); None follows the sampler's `shuffle`."""
        if start < 0:
            raise W2v2Error(f"`start` must be a batch count of 0 or more, but is {start} instead.")
        self.epoch, self.start = epoch, start
        self.shuffle_batches = self.shuffle if shuffle is None else shuffle

    def batches(self) -> List[List[int]]:
        """All batches of the current epoch, over all ranks, longest first, without repeats."""
        return self._plan().batches

    def __iter__(self) -> Iterator[List[ItemKey]]:
        for step in self._plan().steps[self.start :]:
            batch, repeated = step[self.rank]
            yield [ItemKey(int(index), self.epoch, repeated) for index in batch]

    def __len__(self) -> int:
        return max(0, len(self._plan().steps) - self.start)

    def padding_fraction(self) -> float:
        """Share of padding if every batch were padded to its longest item (repeats not counted)."""
        slots = sum(len(batch) * int(self.lengths[batch[0]]) for batch in self.batches())
        return 1.0 - float(self.lengths[self.kept].sum()) / slots if slots else 0.0

    def _plan(self) -> _EpochPlan:
        """The current epoch's batches and steps, computed once per epoch."""
        cached = self._plan_cache
        if cached is None or (cached.epoch, cached.shuffle_batches) != (self.epoch, self.shuffle_batches):
            rng = np.random.default_rng(self.seed + self.epoch)
            batches = self._fill(self._ordered(rng))
            self._plan_cache = _EpochPlan(self.epoch, self.shuffle_batches, batches, self._shard(batches, rng))
        return self._plan_cache

    def _ordered(self, rng: np.random.Generator) -> np.ndarray:
        """Kept indices by descending length; ties in random order when shuffling, else by index."""
        ties = rng.permutation(len(self.kept)) if self.shuffle else np.arange(len(self.kept))
        # np.lexsort sorts by its last key first.
        return self.kept[np.lexsort((ties, -self.lengths[self.kept]))]

    def _fill(self, order: np.ndarray) -> List[List[int]]:
        """Greedy batches over `order`, each cut to a multiple of `batch_size_multiple` items when it
        has that many; the first item of each batch is its longest."""
        limit, multiple = self.batch_size or len(order), self.batch_size_multiple
        lengths = self.lengths[order]
        batches: List[List[int]] = []
        first = 0
        while first < len(order):
            size = min(limit, self.max_tokens // max(1, int(lengths[first])), len(order) - first)
            if size >= multiple:
                size -= size % multiple
            batches.append(order[first : first + size].tolist())
            first += size
        return batches

    def _shard(self, batches: List[List[int]], rng: np.random.Generator) -> List[Step]:
        """Groups of `num_replicas` neighbouring batches, the last completed with repeats, shuffled."""
        size = self.num_replicas
        groups = []
        for first in range(0, len(batches), size):
            group = [(batch, False) for batch in batches[first : first + size]]
            group += [(group[i % len(group)][0], True) for i in range(size - len(group))]
            groups.append(group)
        if self.shuffle_batches:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return groups


def _check_arguments(max_tokens: int, batch_size: Optional[int], num_replicas: int, rank: int,
                     batch_size_multiple: int) -> None:
    """Raise W2v2Error for a budget, batch size, rank or multiple that cannot work."""
    if max_tokens < 1:
        raise W2v2Error(f"`max_tokens` must be a positive number of frames, but is {max_tokens} instead.")
    if batch_size is not None and batch_size < 1:
        raise W2v2Error(f"`batch_size` must be a positive number of utterances, but is {batch_size} instead.")
    if num_replicas < 1:
        raise W2v2Error(f"`num_replicas` must be 1 or more, but is {num_replicas} instead.")
    if not 0 <= rank < num_replicas:
        raise W2v2Error(f"`rank` must be in [0, {num_replicas}), but is {rank} instead.")
    if batch_size_multiple < 1:
        raise W2v2Error(f"`required_batch_size_multiple` must be 1 or more, but is {batch_size_multiple} instead.")
