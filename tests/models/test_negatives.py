"""Distractor sampling never picks the positive and stays within its utterance."""

from __future__ import annotations

import torch

from w2v2.models.negatives import sample_negatives


def test_same_utterance_distractors_exclude_the_positive():
    torch.manual_seed(0)
    bsz, num, k = 3, 6, 50
    y = torch.randn(bsz, num, 4)
    negs, idx = sample_negatives(y, num, k)
    assert negs.shape == (k, bsz, num, 4)
    rows = idx.view(bsz, num, k)
    utterance = torch.arange(bsz).view(-1, 1, 1)
    frame = torch.arange(num).view(1, -1, 1)
    assert (rows // num == utterance).all()
    assert (rows % num != frame).all()
    assert len(torch.unique(rows % num)) == num  # every other frame gets drawn


def test_cross_sample_distractors_come_from_the_whole_batch():
    torch.manual_seed(1)
    y = torch.randn(4, 5, 3)
    negs, idx = sample_negatives(y, 5, 0, cross_sample_negatives=40)
    assert negs.shape == (40, 4, 5, 3)
    assert len(torch.unique(idx)) > 5  # beyond a single utterance


def test_injected_indices_gather_those_rows():
    y = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)
    idx = torch.tensor([[1, 2, 0], [5, 3, 4]])
    negs, same = sample_negatives(y, 3, 1, indices=idx)
    assert same is idx
    assert torch.equal(negs[0].reshape(-1, 2), y.reshape(-1, 2)[idx.reshape(-1)])
