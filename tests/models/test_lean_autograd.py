"""The autograd Functions that keep less for the backward: same values and gradients as the plain ops."""

from __future__ import annotations

from typing import List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from w2v2.models.config import Wav2Vec2Config
from w2v2.models.dropout import seeded_keep_mask
from w2v2.models.lean_autograd import LeanLayerNorm, gelu_dropout_linear
from w2v2.models.transformer import MultiheadAttention, TransformerSentenceEncoderLayer


def _saved(fn) -> List[torch.Tensor]:
    """The tensors autograd keeps for the backward while `fn()` runs, and its result (last)."""
    kept: List[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = fn()
    return kept + [out]


def test_stacked_qkv_projection_has_the_gradients_of_the_concatenated_linear_and_saves_no_weight_copy():
    torch.manual_seed(0)
    attention = MultiheadAttention(32, 4, dropout=0.0).train()
    x = torch.randn(7, 2, 32, requires_grad=True)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 4:] = True
    *kept, out = _saved(lambda: attention(x, padding))
    assert torch.Size([96, 32]) not in [t.shape for t in kept]  # no concatenated (3C, C) weight
    out.pow(2).sum().backward()
    ours = [x.grad.clone()] + [p.grad.clone() for p in attention.parameters()]
    x.grad = None
    attention.zero_grad()
    projections = [getattr(attention, f"{n}_proj") for n in "qkv"]
    qkv = F.linear(x, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
    q, k, v = (t.view(7, 2, 4, 8).permute(1, 2, 0, 3) for t in qkv.chunk(3, dim=-1))
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    attention.out_proj(att.permute(2, 0, 1, 3).reshape(7, 2, 32)).pow(2).sum().backward()
    expected = [x.grad] + [p.grad for p in attention.parameters()]
    for mine, theirs in zip(ours, expected):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_stacked_qkv_projection_under_autocast_gives_gradients_in_each_parameters_dtype():
    torch.manual_seed(0)
    attention = MultiheadAttention(32, 4, dropout=0.0).train()
    x = torch.randn(5, 2, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(x, None)
    assert out.dtype == torch.bfloat16
    out.float().pow(2).sum().backward()
    assert x.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in attention.parameters())
    q_grad = attention.q_proj.weight.grad.clone()
    attention.zero_grad()
    projections = [getattr(attention, f"{n}_proj") for n in "qkv"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qkv = F.linear(x, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
        q, k, v = (t.view(5, 2, 4, 8).permute(1, 2, 0, 3) for t in qkv.chunk(3, dim=-1))
        ref = attention.out_proj(F.scaled_dot_product_attention(q, k, v).permute(2, 0, 1, 3).reshape(5, 2, 32))
    ref.float().pow(2).sum().backward()
    assert torch.allclose(q_grad, attention.q_proj.weight.grad, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gelu_dropout_linear_equals_the_plain_ops_with_the_same_mask_and_keeps_only_its_input(p):
    torch.manual_seed(0)
    layer = nn.Linear(24, 8)
    h = torch.randn(6, 2, 24, requires_grad=True)
    torch.manual_seed(5)
    *kept, out = _saved(lambda: gelu_dropout_linear(h, p, layer))
    # h and the weight, nothing of h's size more (no GELU output, no dropped copy, no mask)
    assert all(t is layer.weight or t.data_ptr() == h.data_ptr() for t in kept)
    grad = torch.randn_like(out)
    out.backward(grad)
    ours = [t.grad.clone() for t in (h, layer.weight, layer.bias)]
    for t in (h, layer.weight, layer.bias):
        t.grad = None
    torch.manual_seed(5)  # the seed the function drew, then its mask
    a = F.gelu(h)
    if p:
        a = torch.where(seeded_keep_mask(h.shape, p, int(torch.randint(1 << 62, ()))), a, 0.0) / (1 - p)
        assert 0 < int((a == 0).sum()) < a.numel()
    expected = layer(a)
    expected.backward(grad)
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-7)
    for mine, theirs in zip(ours, (h.grad, layer.weight.grad, layer.bias.grad)):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_gelu_dropout_linear_passes_gradcheck_and_steps_aside_under_autocast_and_without_gradients():
    torch.manual_seed(1)
    layer = nn.Linear(5, 3).double()

    def seeded(h: torch.Tensor) -> torch.Tensor:  # the same mask at every call gradcheck makes
        torch.manual_seed(2)
        return gelu_dropout_linear(h, 0.4, layer)

    h = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert type(seeded(h).grad_fn).__name__ == "_GeluDropoutLinearBackward"
    assert torch.autograd.gradcheck(seeded, h)
    h = torch.randn(4, 5, requires_grad=True)
    fp32 = layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gelu_dropout_linear(h, 0.0, fp32).dtype == torch.bfloat16  # autocast: the plain ops
    with torch.no_grad():
        assert torch.allclose(gelu_dropout_linear(h, 0.0, fp32), fp32(F.gelu(h)))


def _layer_norms(weight_range=(0.2, 1.5), bias_range=(-2.0, 2.0), size=64):
    """A LeanLayerNorm and a torch LayerNorm with the same random affine parameters."""
    lean = LeanLayerNorm(size)
    with torch.no_grad():
        lean.weight.uniform_(*weight_range)
        lean.bias.uniform_(*bias_range)
    plain = nn.LayerNorm(size)
    plain.load_state_dict(lean.state_dict())
    return lean, plain


def _norm_gradients(norm: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> List[torch.Tensor]:
    x = x.clone().requires_grad_()
    norm.zero_grad()
    (norm(x) * grad).sum().backward()
    return [x.grad, norm.weight.grad, norm.bias.grad]


def test_lean_layer_norm_has_torchs_values_and_gradients_and_keeps_its_output_not_its_input():
    torch.manual_seed(0)
    lean, plain = _layer_norms()
    x = torch.randn(30, 2, 64) * 4 + 3
    grad = torch.randn(30, 2, 64)
    assert torch.equal(lean(x), plain(x))
    for mine, theirs in zip(_norm_gradients(lean, x, grad), _norm_gradients(plain, x, grad)):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    leaf = x.clone().requires_grad_()
    *kept, out = _saved(lambda: lean(leaf))
    storages = {t.untyped_storage().data_ptr() for t in kept}
    assert out.untyped_storage().data_ptr() in storages
    assert leaf.untyped_storage().data_ptr() not in storages


def test_lean_layer_norm_passes_gradcheck():
    torch.manual_seed(0)
    lean, _ = _layer_norms(size=6)
    lean = lean.double()
    x = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: lean(x), (x, lean.weight, lean.bias))


@pytest.mark.parametrize("weight_range,bias_range", [((0.0, 0.0), (0.0, 0.1)), ((0.01, 0.01), (-3.0, 3.0))])
def test_lean_layer_norm_falls_back_to_torchs_where_its_input_cannot_be_recovered(weight_range, bias_range):
    torch.manual_seed(0)
    lean, plain = _layer_norms(weight_range, bias_range)
    x = torch.randn(5, 64, requires_grad=True)
    out = lean(x)
    assert "NativeLayerNorm" in type(out.grad_fn).__name__
    grad = torch.randn(5, 64)
    for mine, theirs in zip(_norm_gradients(lean, x.detach(), grad), _norm_gradients(plain, x.detach(), grad)):
        assert torch.equal(mine, theirs)


def test_transformer_layer_keeps_neither_layer_norms_input():
    """Post-LN: the two layer norms' inputs (the residual sums) are not kept; their outputs are, once."""
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                         dropout=0.0, attention_dropout=0.0, activation_dropout=0.1)
    layer = TransformerSentenceEncoderLayer(cfg).train()
    x = torch.randn(9, 2, 32, requires_grad=True)
    *kept, (out, _) = _saved(lambda: layer(x, None))
    full = [t for t in kept if t.untyped_storage().nbytes() == x.untyped_storage().nbytes()]
    storages = {t.untyped_storage().data_ptr() for t in full}
    # the layer's input (kept by q/k/v), the attention output, and the two norms' outputs (the first is fc1's
    # input, the second the next layer's q/k/v input); torch's layer norm would add both residual sums
    assert len(storages) == 4
    assert {x.untyped_storage().data_ptr(), out.untyped_storage().data_ptr()} <= storages
