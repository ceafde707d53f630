"""fairseq's dynamic loss-scaling rule on torch's GradScaler: fp16_scale_tolerance, threshold_loss_scale,
min_loss_scale, checkpointed state, and the fp16 / amp settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.config import CommonConfig
from w2v2.train.loss_scaler import LossScaler, loss_scaler

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fairseq" / "loss_scale_sequences.json"
CASES = {case["name"]: case for case in json.loads(FIXTURE.read_text())["cases"]}
SETTINGS = ("init_scale", "scale_window", "tolerance", "threshold", "min_loss_scale")


def started(**settings) -> LossScaler:
    scaler = LossScaler("cpu", True, **settings)
    scaler.scale(torch.ones(()))  # torch creates the scale tensor at the first `scale`
    return scaler


def scales_of(overflows, scaler: LossScaler):
    """(scale after each update, the update that stopped training or None)."""
    scales = []
    for update, overflow in enumerate(overflows):
        try:
            scaler.finish_step(overflow)
        except W2v2Error:
            return scales, update
        scales.append(scaler.get_scale())
    return scales, None


@pytest.mark.parametrize("name", sorted(CASES))
def test_scales_are_fairseqs(name):
    case = CASES[name]
    scaler = started(**{key: case[key] for key in SETTINGS})
    assert scales_of(case["overflows"], scaler) == (case["scales"], case["stopped_at"])


@pytest.mark.parametrize("name, key, default", [
    ("tolerance", "tolerance", 0.0), ("tolerance_burst", "tolerance", 0.0),
    ("threshold", "threshold", None), ("min_loss_scale", "min_loss_scale", 1e-4),
])
def test_each_setting_changes_the_scales(name, key, default):
    case = CASES[name]
    settings = {**{k: case[k] for k in SETTINGS}, key: default}
    assert scales_of(case["overflows"], started(**settings)) != (case["scales"], case["stopped_at"])


def test_the_stop_names_the_key():
    scaler = started(init_scale=8.0, min_loss_scale=4.0)
    with pytest.raises(W2v2Error, match=r"must stay above `common.min_loss_scale` \(4\).*would fall to 4"):
        scaler.finish_step(overflow=True)


def test_without_tolerance_and_threshold_the_scales_are_torchs_gradscaler():
    """fairseq's amp mode is torch's GradScaler: the same rule when tolerance is 0 and no threshold."""
    overflows = CASES["defaults"]["overflows"]
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.0)
    torchs = torch.amp.GradScaler("cpu", init_scale=128.0, growth_interval=4)
    expected = []
    for overflow in overflows:
        torchs.scale((weight * (float("inf") if overflow else 1.0)).sum()).backward()
        torchs.step(optimizer)
        torchs.update()
        optimizer.zero_grad()
        expected.append(torchs.get_scale())
    assert scales_of(overflows, started(init_scale=128.0, scale_window=4)) == (expected, None)


def test_state_dict_restores_the_counters_mid_run():
    case = CASES["tolerance"]
    settings = {key: case[key] for key in SETTINGS}
    first = started(**settings)
    head, _ = scales_of(case["overflows"][:23], first)
    state = first.state_dict()
    assert {"scale", "growth_interval", "_growth_tracker", "fairseq"} <= set(state)
    resumed = LossScaler("cpu", True, **settings)
    resumed.load_state_dict(state)
    resumed.scale(torch.ones(()))
    tail, _ = scales_of(case["overflows"][23:], resumed)
    assert head + tail == case["scales"]


def test_a_plain_gradscaler_state_keeps_its_count_towards_the_next_doubling():
    old = torch.amp.GradScaler("cpu", init_scale=64.0, growth_interval=5)
    old.load_state_dict({**old.state_dict(), "scale": 64.0, "_growth_tracker": 3})
    scaler = LossScaler("cpu", True, init_scale=1.0, scale_window=5)
    scaler.load_state_dict(old.state_dict())
    scaler.scale(torch.ones(()))
    assert scales_of([False] * 3, scaler)[0] == [64.0, 128.0, 128.0]  # 2 more clean updates make 5


def test_a_disabled_scaler_does_nothing():
    scaler = LossScaler("cpu", False)
    scaler.finish_step(overflow=True)
    assert scaler.state_dict() == {} and not scaler.is_enabled()


def test_fp16_settings_come_from_the_fp16_keys():
    common = CommonConfig(fp16_init_scale=4, fp16_scale_window=None, fp16_scale_tolerance=0.5,
                          threshold_loss_scale=2.0, min_loss_scale=0.5)
    scaler = loss_scaler(common, torch.device("cpu"), True, default_window=7)
    assert (scaler.get_scale(), scaler.scale_window, scaler.tolerance, scaler.threshold, scaler.min_loss_scale) == (
        4.0, 7, 0.5, 2.0, 0.5)
    assert loss_scaler(CommonConfig(fp16_scale_window=3), torch.device("cpu"), True, 7).scale_window == 3


def test_amp_settings_come_from_the_amp_keys_without_tolerance_or_threshold(caplog):
    common = CommonConfig(amp=True, amp_init_scale=16, amp_scale_window=None, fp16_init_scale=16,
                          fp16_scale_tolerance=0.5, threshold_loss_scale=2.0, min_loss_scale=0.5)
    with caplog.at_level(logging.WARNING):
        scaler = loss_scaler(common, torch.device("cpu"), True, default_window=7)
    assert (scaler.get_scale(), scaler.scale_window, scaler.tolerance, scaler.threshold, scaler.min_loss_scale) == (
        16.0, 2000, 0.0, None, 0.5)
    assert not caplog.records  # fairseq's code and help agree here
    common.amp_scale_window = 50
    with caplog.at_level(logging.WARNING):
        assert loss_scaler(common, torch.device("cpu"), True, default_window=7).scale_window == 50
    assert "fairseq 0.12.2's code instead starts from fp16_init_scale" in caplog.text
