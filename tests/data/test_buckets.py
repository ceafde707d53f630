"""fairseq's `task.num_batch_buckets`: batches padded to a few bucket lengths, so an epoch has few shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.data.test_datasets import LETTERS, write_corpus
from w2v2.data import collate
from w2v2.data.datasets import FinetuningDataset, PretrainingDataset
from w2v2.errors import W2v2Error

SIZES = np.array([16000, 17000, 17000, 18500, 20000, 21000, 24000, 24001, 26000, 30000, 31999, 16500])
# fairseq 0.12.2's data_utils.get_buckets / get_bucketed_sizes on SIZES (run with the oracle).
FAIRSEQ = {
    1: ([31999], [31999] * 12),
    3: ([17000, 24000, 31999], [17000, 17000, 17000, 24000, 24000, 24000, 24000, 31999, 31999, 31999, 31999, 17000]),
    4: ([17000, 20000, 24001, 31999],
        [17000, 17000, 17000, 20000, 20000, 24001, 24001, 24001, 31999, 31999, 31999, 17000]),
    16: ([16000, 16500, 17000, 18500, 20000, 21000, 24000, 24001, 26000, 30000, 31999], SIZES.tolist()),
}


@pytest.mark.parametrize("num_buckets", sorted(FAIRSEQ))
def test_buckets_and_bucketed_lengths_are_fairseqs(num_buckets):
    boundaries = collate.bucket_boundaries(SIZES, num_buckets)
    assert (boundaries.tolist(), collate.bucketed_lengths(SIZES, boundaries).tolist()) == FAIRSEQ[num_buckets]


def epoch_shapes(dataset, max_tokens: int) -> set:
    """The distinct (batch, time) shapes of one epoch's batches."""
    sampler = dataset.batch_sampler(max_tokens, seed=3)
    return {tuple(dataset.collater([dataset[key] for key in keys])["net_input"]["source"].shape) for keys in sampler}


def test_buckets_bound_the_distinct_lengths_of_an_epoch(tmp_path):
    lengths = [int(n) for n in np.random.default_rng(0).integers(800, 3200, size=40)]
    entries, _ = write_corpus(tmp_path, lengths)
    dataset = FinetuningDataset(tmp_path, entries, ["H E L L O |"] * len(lengths), LETTERS)
    plain = {time for _, time in epoch_shapes(dataset, max_tokens=7000)}
    dataset.set_bucket_info(4)
    bucketed = {time for _, time in epoch_shapes(dataset, max_tokens=7000)}
    boundaries = set(collate.bucket_boundaries(np.array(lengths), 4).tolist())
    assert len(plain) > 10 and bucketed <= boundaries and len(bucketed) <= 4
    dataset.set_bucket_info(0)
    assert {time for _, time in epoch_shapes(dataset, max_tokens=7000)} == plain


def test_a_bucketed_batch_pads_to_its_longest_items_bucket_with_a_mask(tmp_path):
    entries, waves = write_corpus(tmp_path, [1000, 1600, 700, 3000])
    dataset = FinetuningDataset(tmp_path, entries, ["T O |"] * 4, LETTERS)
    dataset.set_bucket_info(2)  # buckets 1000 and 3000
    batch = dataset.collater([dataset[i] for i in (0, 2)])
    source, mask = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    assert source.shape == mask.shape == (2, 1000) and mask.sum(1).tolist() == [0, 300]
    batch = dataset.collater([dataset[i] for i in (1, 2)])
    assert batch["net_input"]["source"].shape == (2, 3000) and batch["net_input"]["padding_mask"].sum(1).tolist() \
        == [1400, 2300]
    assert torch.equal(batch["net_input"]["source"][0, :1600], torch.as_tensor(waves[1]))
    assert batch["padding_fraction"] == pytest.approx(1 - 2300 / 6000)


def test_pretraining_buckets_need_padding(tmp_path):
    entries, _ = write_corpus(tmp_path, [1000, 1600, 3000])
    padded = PretrainingDataset(tmp_path, entries, max_sample_size=2000, pad=True)
    padded.set_bucket_info(2)  # buckets of the cropped lengths: 1600 and 2000
    assert padded.collater([padded[0], padded[1]])["net_input"]["source"].shape == (2, 1600)
    assert padded.collater([padded[0]])["net_input"]["source"].shape == (1, 1600)  # padded from 1000
    with pytest.raises(W2v2Error, match="`task.num_batch_buckets` needs padded batches"):
        PretrainingDataset(tmp_path, entries).set_bucket_info(2)
