"""fairseq's adam: AdamW, one parameter group, decoupled weight decay on every parameter."""

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.optim import AdamConfig, allocate_state, build_optimizer, format_betas, parse_betas


def pretraining_adam() -> AdamConfig:
    return AdamConfig(adam_betas="(0.9,0.98)", adam_eps=1e-6, weight_decay=0.01, lr=[5e-4])


@pytest.mark.parametrize("value", ["(0.9,0.98)", " (0.9, 0.98) ", [0.9, 0.98], (0.9, 0.98)])
def test_parse_betas_accepts_fairseq_forms(value):
    assert parse_betas(value) == (0.9, 0.98)


@pytest.mark.parametrize("value", ["(0.9,)", "0.9", "betas", "(0.9, 1.5)", [0.9, 0.98, 0.999]])
def test_parse_betas_refuses_other_values_naming_the_key(value):
    with pytest.raises(W2v2Error, match="`optimizer.adam_betas`"):
        parse_betas(value)


def test_format_betas_writes_fairseqs_string():
    assert format_betas([0.9, 0.98]) == "(0.9,0.98)"
    assert format_betas("(0.9, 0.999)") == "(0.9, 0.999)"


def test_one_group_with_every_trainable_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].bias.requires_grad_(False)
    optimizer = build_optimizer(model, pretraining_adam())
    assert isinstance(optimizer, torch.optim.AdamW)
    (group,) = optimizer.param_groups
    assert [p.shape for p in group["params"]] == [(4, 3), (4,), (4,)]  # the frozen bias is left out
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-6
    assert group["weight_decay"] == 0.01 and group["lr"] == 5e-4


def test_weight_decay_is_decoupled_from_the_gradient():
    # A zero gradient leaves Adam's moments at 0, so only the decay moves the weights: w *= 1 - lr * wd.
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = build_optimizer([weight], pretraining_adam())
    weight.grad = torch.zeros(2)
    optimizer.step()
    assert torch.allclose(weight.detach(), torch.tensor([1.0, -2.0]) * (1 - 5e-4 * 0.01))


def test_first_step_matches_adam_by_hand():
    weight = torch.nn.Parameter(torch.tensor([0.5]))
    optimizer = build_optimizer([weight], AdamConfig(adam_betas="(0.9,0.98)", adam_eps=1e-8, lr=[1e-3]))
    weight.grad = torch.tensor([0.2])
    optimizer.step()
    # Bias-corrected first step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
    assert weight.item() == pytest.approx(0.5 - 1e-3 * 0.2 / (0.2 + 1e-8), rel=1e-6)


def test_no_trainable_parameters_is_an_error():
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    with pytest.raises(W2v2Error, match="no trainable parameters"):
        build_optimizer([frozen], pretraining_adam())


@pytest.mark.parametrize(
    "values, key",
    [({"adam_eps": 0.0}, "optimizer.adam_eps"), ({"weight_decay": -1.0}, "optimizer.weight_decay"),
     ({"fp16_adam_stats": True}, "optimizer.fp16_adam_stats")],
)
def test_invalid_values_name_the_key(values, key):
    with pytest.raises(W2v2Error, match=f"`{key}`"):
        AdamConfig.from_dict(values, "optimizer")


def _run_steps(optimizer: torch.optim.Optimizer, used: torch.nn.Parameter, steps: int = 3) -> None:
    for i in range(steps):
        used.grad = torch.linspace(-1.0, 2.0, used.numel()).view_as(used) * (i + 1)
        optimizer.step()


@pytest.mark.parametrize("kind, default_dtype", [(dict(fused=True), torch.float32), (dict(foreach=True), torch.float32),
                                                 (dict(foreach=True, amsgrad=True), torch.float32),
                                                 (dict(foreach=False), torch.float64)])
def test_state_allocated_up_front_equals_torchs_lazy_state(kind, default_dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)  # torch keeps the step counter in float64 then, unless fused
    try:
        _compare_with_lazy_state(kind)
    finally:
        torch.set_default_dtype(previous)


def _compare_with_lazy_state(kind):
    def make():
        torch.manual_seed(0)
        return torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))  # the second: frozen

    lazy_params, eager_params = make(), make()
    options = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, **kind)
    lazy = torch.optim.AdamW(lazy_params, **options)
    eager = torch.optim.AdamW(eager_params, **options)
    allocate_state(eager)
    assert len(eager.state) == 2 and len(lazy.state) == 0  # made before any step
    _run_steps(lazy, lazy_params[0])
    _run_steps(eager, eager_params[0])
    for a, b in zip(lazy_params, eager_params):
        assert torch.equal(a, b)
    lazy_state, eager_state = lazy.state_dict(), eager.state_dict()
    assert lazy_state["param_groups"] == eager_state["param_groups"]
    assert list(eager_state["state"]) == list(lazy_state["state"]) == [0]  # the frozen one's state was dropped
    for key, value in lazy_state["state"][0].items():
        other = eager_state["state"][0][key]
        assert (value.dtype, value.device, value.shape) == (other.dtype, other.device, other.shape)
        assert torch.equal(value, other)


def test_build_optimizer_allocates_state_and_later_steps_keep_it():
    used, frozen = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = build_optimizer([used, frozen], pretraining_adam())
    assert set(optimizer.state) == {used, frozen}
    _run_steps(optimizer, used, steps=1)
    assert set(optimizer.state) == {used}
    frozen.grad = torch.ones(2)  # a parameter that gets its first gradient later is set up lazily, as in torch
    _run_steps(optimizer, used, steps=1)
    assert set(optimizer.state) == {used, frozen} and float(optimizer.state[frozen]["step"]) == 1.0
