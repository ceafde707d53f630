"""fairseq's span masking: counts, statistics, same-size rows, padding, channel masks."""

from __future__ import annotations

import numpy as np
import torch

from w2v2.models.masking import compute_mask_indices
from w2v2.models.wav2vec2 import Wav2Vec2Model


def test_base_settings_mask_about_half_the_frames():
    rng = np.random.default_rng(0)
    # one 15.6 s crop (780 frames) at a time: the per-utterance rate
    single = np.mean([compute_mask_indices((1, 780), None, 0.65, 10, min_masks=2, rng=rng).mean() for _ in range(200)])
    assert 0.47 <= single <= 0.50
    # require_same_masks trims every row to the batch's smallest count, so batches mask a little less
    batch = compute_mask_indices((6, 780), None, 0.65, 10, min_masks=2, rng=rng).mean()
    assert 0.43 <= batch < single


def test_rows_get_the_same_count_and_padding_is_never_masked():
    rng = np.random.default_rng(1)
    padding = torch.zeros(4, 200, dtype=torch.bool)
    padding[1, 120:] = True
    padding[3, 60:] = True
    mask = compute_mask_indices((4, 200), padding, 0.65, 10, min_masks=2, rng=rng)
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert not mask[padding.numpy()].any()


def test_without_same_masks_rows_follow_their_length():
    rng = np.random.default_rng(2)
    padding = torch.zeros(2, 400, dtype=torch.bool)
    padding[1, 100:] = True
    mask = compute_mask_indices((2, 400), padding, 0.65, 10, min_masks=2, require_same_masks=False, rng=rng)
    assert mask[0].sum() > 2 * mask[1].sum()


def test_min_masks_and_mask_dropout():
    rng = np.random.default_rng(3)
    mask = compute_mask_indices((1, 30), None, 0.01, 5, min_masks=2, rng=rng)
    assert mask.sum() >= 5  # two spans of 5, at least one full span
    full = compute_mask_indices((8, 300), None, 0.65, 10, min_masks=2, rng=np.random.default_rng(4))
    holed = compute_mask_indices((8, 300), None, 0.65, 10, min_masks=2, mask_dropout=0.5,
                                 rng=np.random.default_rng(4))
    assert abs(holed.sum() / full.sum() - 0.5) < 0.05


def test_no_overlap_keeps_spans_apart():
    rng = np.random.default_rng(5)
    mask = compute_mask_indices((16, 200), None, 0.3, 5, no_overlap=True, min_space=2,
                                require_same_masks=False, rng=rng)
    for row in mask:
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
        assert (runs % 5 == 0).all() and (runs == 5).all()


def test_other_span_length_distributions_run():
    for selection in ("uniform", "normal", "poisson"):
        mask = compute_mask_indices((4, 300), None, 0.5, 10, selection, 2.0, min_masks=2,
                                    rng=np.random.default_rng(6))
        assert mask.any(), selection


def test_channel_masks_zero_whole_channels(tiny_cfg):
    tiny_cfg.mask_prob = 0.0
    tiny_cfg.mask_channel_prob = 0.5
    tiny_cfg.mask_channel_length = 4
    model = Wav2Vec2Model(tiny_cfg)
    x = torch.randn(3, 20, 32) + 5.0
    masked, time_mask = model.apply_mask(x, None)
    assert time_mask is None
    zero = masked == 0
    assert zero.any()
    assert torch.equal(zero.all(1), zero.any(1))  # a channel is zero in every frame or in none


def test_time_mask_uses_mask_embedding(tiny_cfg):
    model = Wav2Vec2Model(tiny_cfg)
    x = torch.randn(2, 50, 32)
    masked, time_mask = model.apply_mask(x, None)
    assert torch.equal(masked[time_mask], model.mask_emb.detach().expand(int(time_mask.sum()), -1))
    assert torch.equal(masked[~time_mask], x[~time_mask])
