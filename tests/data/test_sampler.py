import collections
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from w2v2.data.sampler import ItemKey, LengthBatchSampler
from w2v2.errors import W2v2Error

LENGTHS = np.random.default_rng(0).integers(1000, 20000, size=203)
# Many equal lengths, so that the random tie-breaking shows.
LENGTHS[::3] = 5000


def _rank_batches(num_replicas, epoch=1, start=0, **options):
    """Per rank, the list of batches (lists of ItemKey) one epoch yields."""
    result = []
    for rank in range(num_replicas):
        sampler = LengthBatchSampler(LENGTHS, 60000, num_replicas=num_replicas, rank=rank, **options)
        sampler.set_epoch(epoch, start)
        result.append(list(sampler))
    return result


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_every_item_once_per_epoch_across_ranks_and_same_step_count(num_replicas, batch_size):
    per_rank = _rank_batches(num_replicas, batch_size=batch_size)
    assert len({len(batches) for batches in per_rank}) == 1
    seen = collections.Counter(
        key.index for batches in per_rank for batch in batches for key in batch if not key.repeated
    )
    assert sorted(seen) == list(range(len(LENGTHS))) and set(seen.values()) == {1}
    repeats = sum(batch[0].repeated for batches in per_rank for batch in batches)
    assert repeats == -len(LengthBatchSampler(LENGTHS, 60000, batch_size).batches()) % num_replicas


@pytest.mark.parametrize("batch_size", [None, 3, 8])
def test_no_batch_exceeds_max_tokens_or_batch_size(batch_size):
    for batch in LengthBatchSampler(LENGTHS, 60000, batch_size).batches():
        assert len(batch) * LENGTHS[batch].max() <= 60000
        assert batch_size is None or len(batch) <= batch_size


def test_last_partial_batch_is_kept():
    sampler = LengthBatchSampler([100] * 9, 10**6, batch_size=8)
    assert sorted(len(batch) for batch in sampler.batches()) == [1, 8]
    assert sum(len(batch) for batch in sampler) == 9


BATCH_BY_SIZE = json.loads((Path(__file__).parents[1] / "fixtures" / "fairseq" / "batch_by_size.json").read_text())


@pytest.mark.parametrize("case", BATCH_BY_SIZE["cases"], ids=lambda case: f"{len(case['sizes'])}items")
def test_batches_are_fairseqs_batch_by_size_without_losing_items(case):
    sizes, multiple = case["sizes"], case["required_batch_size_multiple"]
    ours = LengthBatchSampler(sizes, case["max_tokens"], case["batch_size"], shuffle=False,
                              batch_size_multiple=multiple).batches()
    assert sorted(index for batch in ours for index in batch) == list(range(len(sizes)))  # nothing lost
    assert all(len(batch) < multiple or len(batch) % multiple == 0 for batch in ours)
    # fairseq 0.12.2 makes the same batches but loses the last few (shortest) items, fewer than the multiple.
    kept = {index for batch in case["batches"] for index in batch}
    assert len(sizes) - len(kept) < multiple and kept == set(range(len(kept)))
    assert [[i for i in batch if i in kept] for batch in ours if batch[0] in kept] == case["batches"]


def test_the_multiple_cuts_full_batches_and_the_rest_starts_the_next():
    sampler = LengthBatchSampler([100] * 23, 1000, batch_size_multiple=4)
    assert [len(batch) for batch in sampler.batches()] == [8, 8, 4, 3]  # 10 fit a batch: cut to 8
    assert [len(batch) for batch in LengthBatchSampler([100] * 23, 1000).batches()] == [10, 10, 3]
    with pytest.raises(W2v2Error, match="`required_batch_size_multiple` must be 1 or more, but is 0"):
        LengthBatchSampler([100], 1000, batch_size_multiple=0)


def test_an_epoch_without_shuffling_keeps_the_batches_longest_first():
    """fairseq's `dataset.curriculum`: the loop passes `shuffle=epoch > curriculum`."""
    sampler = LengthBatchSampler(LENGTHS, 60000, num_replicas=2)
    sampler.set_epoch(1, shuffle=False)
    ordered = [[key.index for key in batch] for batch in sampler]
    assert ordered == sampler.batches()[::2]  # rank 0 takes every other batch, longest first
    sampler.set_epoch(1)
    shuffled = [[key.index for key in batch] for batch in sampler]
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    sampler.set_epoch(1, start=3, shuffle=False)
    assert [[key.index for key in batch] for batch in sampler] == ordered[3:]


def test_batches_group_similar_lengths_longest_first():
    batches = LengthBatchSampler(LENGTHS, 60000).batches()
    for batch, following in zip(batches, batches[1:]):
        assert LENGTHS[batch].min() >= LENGTHS[following].max()
        assert LENGTHS[batch[0]] == LENGTHS[batch].max()


def test_same_seed_and_epoch_give_the_same_batches_and_other_epochs_differ():
    assert _rank_batches(2, epoch=3, seed=7) == _rank_batches(2, epoch=3, seed=7)
    indices = [[[key.index for key in batch] for batch in batches] for batches in _rank_batches(1, epoch=3)]
    assert indices != [[[key.index for key in batch] for batch in batches] for batches in _rank_batches(1, epoch=4)]
    assert all(key.epoch == 3 for batches in _rank_batches(2, epoch=3) for batch in batches for key in batch)


def test_ties_are_broken_differently_per_epoch_but_the_batch_lengths_stay():
    sampler = LengthBatchSampler(LENGTHS, 60000)
    first = sampler.batches()
    sampler.set_epoch(2)
    second = sampler.batches()
    assert first != second
    assert [LENGTHS[b].tolist() for b in first] == [LENGTHS[b].tolist() for b in second]


def test_resuming_mid_epoch_gives_the_remaining_batches():
    full = _rank_batches(3, epoch=2)
    resumed = _rank_batches(3, epoch=2, start=5)
    assert resumed == [batches[5:] for batches in full]
    sampler = LengthBatchSampler(LENGTHS, 60000, num_replicas=3)
    sampler.set_epoch(2, start=5)
    assert len(sampler) == len(full[0]) - 5


def test_ranks_at_one_step_get_neighbouring_batches():
    order = {tuple(batch): position for position, batch in enumerate(LengthBatchSampler(LENGTHS, 60000).batches())}
    per_rank = _rank_batches(4)
    for step in zip(*per_rank):
        positions = {order[tuple(key.index for key in batch)] for batch in step}
        assert max(positions) - min(positions) < 4


def test_without_shuffle_the_order_is_by_length_then_index():
    sampler = LengthBatchSampler([5, 7, 5, 7, 6], 14, shuffle=False)
    assert sampler.batches() == [[1, 3], [4, 0], [2]]
    assert [[key.index for key in batch] for batch in sampler] == [[1, 3], [4, 0], [2]]


def test_long_items_are_dropped_counted_and_reported_only_when_allowed(caplog):
    with caplog.at_level(logging.WARNING):
        sampler = LengthBatchSampler([10, 50, 20, 60], 40, drop_long=True)
    assert sampler.num_dropped == 2 and "2 of 4 utterances are longer than max_tokens=40" in caplog.text
    assert sorted(key.index for batch in sampler for key in batch) == [0, 2]
    with pytest.raises(W2v2Error, match="`max_tokens` must be at least the longest item's length, 60"):
        LengthBatchSampler([10, 50, 20, 60], 40)


def test_padding_fraction():
    assert LengthBatchSampler([10, 5], 20).padding_fraction() == pytest.approx(0.25)
    assert LengthBatchSampler([10, 5], 10).padding_fraction() == 0.0
    sorted_fraction = LengthBatchSampler(LENGTHS, 60000).padding_fraction()
    assert 0.0 < sorted_fraction < 0.1


def test_keys_are_item_keys():
    key = next(iter(LengthBatchSampler([3, 4], 100)))[0]
    assert isinstance(key, ItemKey) and key.repeated is False and key.epoch == 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_tokens": 0}, "`max_tokens` must be a positive number of frames, but is 0"),
        ({"batch_size": 0}, "`batch_size` must be a positive number of utterances, but is 0"),
        ({"num_replicas": 0}, "`num_replicas` must be 1 or more"),
        ({"num_replicas": 2, "rank": 2}, r"`rank` must be in \[0, 2\), but is 2"),
    ],
)
def test_bad_arguments_are_errors(options, message):
    arguments = {"max_tokens": 100, **options}
    with pytest.raises(W2v2Error, match=message):
        LengthBatchSampler([10, 20], **arguments)


def test_negative_start_is_an_error():
    with pytest.raises(W2v2Error, match="`start` must be a batch count of 0 or more"):
        LengthBatchSampler([10], 100).set_epoch(1, start=-1)
