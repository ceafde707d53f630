"""The CPU dropout: its drop rate, scale and gradient, its seeding, and where it steps aside for torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from w2v2.models.dropout import Dropout, apply_keep, apply_keep_, dropout, keep_mask
from tests.models.conftest import allocation_peak


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_the_drop_rate_is_p_and_kept_values_are_scaled(p):
    torch.manual_seed(0)
    x = torch.rand(400, 1000) + 1.0  # never 0, so a 0 in the output is a drop
    out = dropout(x, p, training=True)
    dropped = out == 0
    # 400k draws: the rate is within 5 standard deviations of p
    assert abs(dropped.double().mean().item() - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert torch.allclose(out[~dropped], x[~dropped] / (1 - p))


def test_every_lane_of_the_random_words_is_uniform():
    """Each 64-bit word gives 4 numbers; a lane with a constant bit (int64 random_() without a range leaves
    the sign bit 0) would drop twice as often."""
    torch.manual_seed(1)
    keep = keep_mask(torch.Size([4 * 200_000]), 0.1).view(-1, 4)
    rates = 1 - keep.double().mean(0)
    assert torch.all((rates - 0.1).abs() < 5 * (0.09 / 200_000) ** 0.5), rates


def test_the_gradient_is_the_kept_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(50, 60, requires_grad=True)
    out = dropout(x, 0.3, training=True)
    grad = torch.randn_like(out)
    out.backward(grad)
    kept = out.detach() != 0
    assert torch.allclose(x.grad, torch.where(kept, grad / 0.7, 0.0), rtol=1e-6, atol=0)

    def seeded(t: torch.Tensor) -> torch.Tensor:  # the same mask at every call gradcheck makes
        torch.manual_seed(3)
        return dropout(t, 0.3, True)

    assert torch.autograd.gradcheck(seeded, torch.randn(5, 4, dtype=torch.float64, requires_grad=True))


def test_the_draws_follow_the_seed_and_the_layout_of_the_input():
    x = torch.ones(30, 40)
    torch.manual_seed(4)
    first = dropout(x, 0.2, True)
    torch.manual_seed(4)
    assert torch.equal(dropout(x, 0.2, True), first)
    assert not torch.equal(dropout(x, 0.2, True), first)  # the generator moved on
    torch.manual_seed(4)
    transposed = dropout(x.t(), 0.2, True)  # a non-contiguous input gets a mask of its own shape
    assert transposed.shape == (40, 30) and 0 < (transposed == 0).sum() < x.numel()


def test_eval_mode_p_0_and_p_1_behave_as_torch():
    x = torch.randn(20, 20)
    module = Dropout(0.4)
    assert torch.equal(module.eval()(x), x) and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    with pytest.raises(ValueError):
        dropout(x, 1.5, True)
    assert repr(module) == repr(torch.nn.Dropout(0.4))


def test_bf16_inputs_keep_their_dtype():
    torch.manual_seed(5)
    out = dropout(torch.ones(100, 100, dtype=torch.bfloat16), 0.5, True)
    assert out.dtype == torch.bfloat16 and set(out.unique().tolist()) == {0.0, 2.0}


def test_a_non_cpu_tensor_takes_torchs_dropout(monkeypatch):
    """On a GPU or NPU torch's fused kernel is used; the meta device stands in for one here."""
    seen = []
    monkeypatch.setattr(F, "dropout", lambda x, p, training: seen.append(x.device.type) or x)
    dropout(torch.empty(3, 3, device="meta"), 0.1, True)
    dropout(torch.empty(3, 3), 0.1, True)
    assert seen == ["meta"]


def test_apply_keep_in_place_equals_apply_keep_and_writes_into_its_input():
    x = torch.randn(7, 33)
    keep = keep_mask(x.shape, 0.3, torch.Generator().manual_seed(5))
    expected = apply_keep(x, keep, 0.3)
    same = x.clone()
    out = apply_keep_(same, keep, 0.3)
    assert out.data_ptr() == same.data_ptr() and torch.equal(out, expected)


def test_apply_keep_in_place_makes_no_copy_of_the_mask_in_the_inputs_dtype(tmp_path):
    # `x.mul_(keep)` would: a float copy of the bool mask, as large as x (18 MB per FFN call at BASE)
    x = torch.randn(512, 1024)
    keep = keep_mask(x.shape, 0.1, torch.Generator().manual_seed(2))
    assert allocation_peak(lambda: apply_keep_(x, keep, 0.1), tmp_path) < x.nbytes // 8
