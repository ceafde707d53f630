"""LR schedules against FACTS §4, with expected values computed here from the recipe numbers."""

import math

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.lr_schedules import FixedConfig, LrScheduler, PolynomialDecayConfig, TriStageConfig


def base_pretraining() -> PolynomialDecayConfig:
    """wav2vec2_base_librispeech: peak 5e-4, 32k warmup updates, linear decay to 0 at 400k."""
    return PolynomialDecayConfig(warmup_updates=32000, total_num_update=400000.0, lr=[5e-4])


def tri_stage(max_update: int, peak: float) -> TriStageConfig:
    """The fine-tuning recipes: phases 10/40/50 % of max_update, final scale 0.05."""
    return TriStageConfig(phase_ratio=[0.1, 0.4, 0.5], final_lr_scale=0.05, max_update=float(max_update), lr=[peak])


@pytest.mark.parametrize(
    "update, expected",
    [
        (0, 0.0),  # the first update runs at lr 0: fairseq sets lr(0) before it
        (1, 5e-4 / 32000),
        (16000, 2.5e-4),
        (32000, 5e-4),
        (32000 + 184000, 2.5e-4),  # half-way through the 368k decay updates
        (400000, 0.0),
        (450000, 0.0),
    ],
)
def test_polynomial_decay_base_pretraining(update, expected):
    assert base_pretraining().lr_at(update) == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_polynomial_decay_power_and_end_lr():
    cfg = PolynomialDecayConfig(warmup_updates=0, total_num_update=100.0, power=2.0, end_learning_rate=1e-5, lr=[1e-3])
    assert cfg.lr_at(0) == pytest.approx(1e-3)
    assert cfg.lr_at(50) == pytest.approx((1e-3 - 1e-5) * 0.25 + 1e-5)
    assert cfg.lr_at(100) == 1e-5


@pytest.mark.parametrize(
    "max_update, phases", [(80000, (8000, 32000, 40000)), (20000, (2000, 8000, 10000)), (13000, (1300, 5200, 6500))]
)
def test_tri_stage_phases_from_ratio(max_update, phases):
    assert tri_stage(max_update, 3e-5).steps() == phases


@pytest.mark.parametrize(
    "update, expected",
    [
        (0, 3e-7),  # init_lr_scale 0.01 of the peak
        (4000, 3e-7 + (3e-5 - 3e-7) / 2),  # linear warmup, half-way
        (8000, 3e-5),
        (39999, 3e-5),  # end of hold
        (40000, 3e-5),  # decay starts at exp(0)
        (60000, 3e-5 * math.sqrt(0.05)),  # exponential: half-way is the geometric mean, not (1 + 0.05) / 2
        (80000, 3e-5 * 0.05),
        (100000, 3e-5 * 0.05),  # constant after the decay
    ],
)
def test_tri_stage_base_100h(update, expected):
    assert tri_stage(80000, 3e-5).lr_at(update) == pytest.approx(expected, rel=1e-12)


def test_tri_stage_explicit_steps():
    cfg = TriStageConfig(warmup_steps=10, hold_steps=5, decay_steps=10, final_lr_scale=0.01, lr=[1.0])
    assert cfg.lr_at(5) == pytest.approx(0.01 + 0.99 / 2)
    assert cfg.lr_at(14) == 1.0
    assert cfg.lr_at(20) == pytest.approx(0.1)  # half-way through the decay: the geometric mean of 1 and 0.01
    assert cfg.lr_at(25) == pytest.approx(0.01)


def test_fixed_warmup_reaches_lr_one_update_early():
    cfg = FixedConfig(warmup_updates=4, lr=[1e-3])
    assert [cfg.lr_at(n) for n in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_scheduler_sets_the_optimizer_lr_for_the_next_update():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = LrScheduler(base_pretraining(), optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.0  # what the first update uses
    assert scheduler.step_update(1) == pytest.approx(5e-4 / 32000)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4 / 32000)


def test_scheduler_state_is_fairseqs_best_loss():
    scheduler = LrScheduler(tri_stage(80000, 3e-5))
    assert scheduler.state_dict() == {"best": None}
    scheduler.step(2.0)
    scheduler.step(3.0)
    assert scheduler.state_dict() == {"best": 2.0}
    restored = LrScheduler(tri_stage(80000, 3e-5))
    restored.load_state_dict({"best": 1.5})
    assert restored.best == 1.5


@pytest.mark.parametrize(
    "schema, values, key",
    [
        (TriStageConfig, dict(phase_ratio=[0.1, 0.4, 0.4], max_update=100.0, lr=[1.0]), "lr_scheduler.phase_ratio"),
        (TriStageConfig, dict(phase_ratio=[0.1, 0.4, 0.5], max_update=0.0, lr=[1.0]), "lr_scheduler.max_update"),
        (TriStageConfig, dict(warmup_steps=10, lr=[1.0]), "lr_scheduler.decay_steps"),
        (PolynomialDecayConfig, dict(total_num_update=0.0, lr=[1.0]), "lr_scheduler.total_num_update"),
        (PolynomialDecayConfig, dict(total_num_update=10.0, lr=[1.0, 0.5]), "lr_scheduler.lr"),
        (FixedConfig, dict(force_anneal=3, lr=[1.0]), "lr_scheduler.force_anneal"),
    ],
)
def test_invalid_schedules_name_the_key(schema, values, key):
    with pytest.raises(W2v2Error, match=f"`{key}`"):
        schema.from_dict(values, "lr_scheduler")


def test_tri_stage_init_lr_scale_is_where_warmup_starts():
    cfg = TriStageConfig(warmup_steps=10, hold_steps=0, decay_steps=10, init_lr_scale=0.5, lr=[1.0])
    assert [cfg.lr_at(n) for n in (0, 5, 10)] == pytest.approx([0.5, 0.75, 1.0])
