"""fairseq's adam: AdamW, one parameter group, decoupled weight decay on every parameter."""

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.train.optim import AdamConfig, build_optimizer, format_betas, parse_betas


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
