"""Gumbel quantizer: temperature schedule, hard codes, perplexities."""

from __future__ import annotations

import math

import pytest
import torch

from w2v2.models.quantizer import GumbelVectorQuantizer


@pytest.mark.parametrize("updates", [0, 1000, 100_000, 250_000, 400_000])
def test_temperature_schedule(updates):
    q = GumbelVectorQuantizer(8, 10, (2.0, 0.5, 0.999995), 2, 16)
    q.set_num_updates(updates)
    assert q.curr_temp == pytest.approx(max(2.0 * math.exp(updates * math.log(0.999995)), 0.5))


def test_outputs_are_codebook_entries_in_training_and_eval():
    torch.manual_seed(0)
    q = GumbelVectorQuantizer(8, 10, (2.0, 0.5, 0.999995), 2, 16)
    x = torch.randn(3, 7, 8)
    for training in (True, False):
        q.train(training)
        out = q(x, produce_targets=True)
        assert out["x"].shape == (3, 7, 16)
        codes = out["targets"]
        groups = q.vars.view(2, 10, 8)
        expected = torch.cat([groups[g][codes[..., g]] for g in range(2)], dim=-1)
        assert torch.allclose(out["x"], expected)
        assert 1.0 <= float(out["code_perplexity"]) <= 20.0
        assert 1.0 <= float(out["prob_perplexity"].detach()) <= 20.0
    assert out["num_vars"] == 20


def test_training_draws_gumbel_samples_and_eval_takes_the_argmax():
    torch.manual_seed(1)
    q = GumbelVectorQuantizer(8, 10, (2.0, 0.5, 1.0), 2, 16).train()
    x = torch.randn(4, 50, 8)
    sampled = q(x, produce_targets=True)["targets"]
    greedy = q.eval()(x, produce_targets=True)["targets"]
    logits = q.weight_proj(x).view(4, 50, 2, 10)
    assert torch.equal(greedy, logits.argmax(-1))
    assert 0.05 < (sampled != greedy).float().mean() < 0.95
