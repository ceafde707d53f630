"""Pieces of the Transformer layer as autograd Functions that keep less for the backward than autograd would.

At BASE with a batch of 2 x 15 s the layers keep ~1.1 GB for the backward; these keep ~470 MB of it no
more, for a little recomputation in the backward (one GELU, one dropout mask and two normalisations per
layer)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from w2v2.models.dropout import apply_keep_, dropout, seeded_keep_mask


def _lean_cpu_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where the CPU-only Functions below apply: on the CPU, gradients on, no autocast, x in the weight's dtype."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def stacked_linear(x: torch.Tensor, *layers: nn.Linear) -> torch.Tensor:
    """`F.linear(x, cat(weights), cat(biases))` of the layers: one matmul for several projections."""
    return _StackedLinear.apply(x, *(layer.weight for layer in layers), *(layer.bias for layer in layers))


class _StackedLinear(torch.autograd.Function):
    """Saves the weights themselves rather than their concatenation, which autograd would keep per layer (a
    (3C, C) copy for q/k/v: 85 MB at BASE in fp32).

    Under autocast the forward's matmul runs in the autocast dtype; the backward computes in the gradient's
    dtype and casts each gradient back to its input's, as autocast's own casts would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weights, biases = params[: len(params) // 2], params[len(params) // 2:]
        ctx.save_for_backward(x, *weights)
        return F.linear(x, torch.cat(weights), torch.cat(biases))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, *weights = ctx.saved_tensors
        count, needs = len(weights), ctx.needs_input_grad
        grad_x = (grad @ torch.cat(weights).to(grad.dtype)).to(x.dtype) if needs[0] else None
        flat, rows = grad.reshape(-1, grad.size(-1)), [w.size(0) for w in weights]  # (T * B, 3C)
        grad_w = grad_b = (None,) * count
        if any(needs[1: 1 + count]):
            stacked = flat.t() @ x.reshape(-1, x.size(-1)).to(grad.dtype)
            grad_w = tuple(g.to(w.dtype) for g, w in zip(stacked.split(rows), weights))
        if any(needs[1 + count:]):
            grad_b = tuple(g.to(w.dtype) for g, w in zip(flat.sum(0).split(rows), weights))
        return (grad_x, *grad_w, *grad_b)


# The layer norm's input is recovered from its output as (y - bias) / weight; the rounding error of y is
# then scaled by max|bias| / min|weight| at most, which this bound keeps within ~2^-18 of x_hat's scale.
_MAX_BIAS_OVER_WEIGHT = 64.0


class LeanLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` (same parameters and state-dict keys) whose backward keeps its output, not its input.

    The output is what the next linear layer keeps anyway, so the input (one activation per layer norm, 4.6
    MB per layer norm at BASE, 2 x 15 s) is freed. Used on the CPU with gradients on and without autocast,
    while min|weight| is large enough that the input is recovered to float precision; otherwise it is
    torch's layer norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        lean = (weight is not None and bias is not None and len(self.normalized_shape) == 1
                and _lean_cpu_path(x, weight) and _recoverable(weight, bias))
        if not lean:
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
        return _LayerNormFromOutput.apply(x, weight, bias, self.eps)


def _recoverable(weight: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether (y - bias) / weight gives back the normalised input to about float precision."""
    smallest = float(weight.detach().abs().min())
    return smallest > 0.0 and float(bias.detach().abs().max()) <= _MAX_BIAS_OVER_WEIGHT * smallest


class _LayerNormFromOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,  # type: ignore[override]
                eps: float) -> torch.Tensor:
        y, _, rstd = torch.ops.aten.native_layer_norm(x, weight.shape, weight, bias, eps)
        ctx.save_for_backward(y, rstd, weight, bias)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        y, rstd, weight, bias = ctx.saved_tensors
        x_hat = (y - bias).div_(weight)
        # torch's fused backward on x_hat as if it were the input with mean 0 and rstd 1: its input gradient
        # then lacks only the factor rstd; the weight and bias gradients are already right.
        unit = torch.ones_like(rstd)
        grad_in, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
            grad, x_hat, weight.shape, torch.zeros_like(rstd), unit, weight, bias, list(ctx.needs_input_grad[:3]))
        return (None if grad_in is None else grad_in.mul_(rstd)), grad_w, grad_b, None


def gelu_dropout_linear(h: torch.Tensor, p: float, layer: nn.Linear) -> torch.Tensor:
    """`layer(dropout(gelu(h), p))`, the second half of the feed-forward block.

    On the CPU with gradients on it keeps only `h` for the backward, not the GELU output, its dropped
    copy and the dropout mask (2 x 4 + 1 bytes per element of `h` less: ~276 MB at BASE, 2 x 15 s); the
    mask is drawn from a seed and drawn again in the backward. Elsewhere (other devices keep torch's
    fused dropout; autocast) it is the plain composition."""
    lean = _lean_cpu_path(h, layer.weight) and 0.0 <= p < 1.0
    if not lean:
        return layer(dropout(F.gelu(h), p, training=p > 0.0))
    seed = int(torch.randint(1 << 62, ())) if p > 0.0 else None  # from the default generator, as dropout's
    return _GeluDropoutLinear.apply(h, p, seed, layer.weight, layer.bias)


def _dropped_gelu(h: torch.Tensor, p: float, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """dropout(gelu(h)) with the mask `keep` (None: no dropout)."""
    out = F.gelu(h)
    return out if keep is None else apply_keep_(out, keep, p)


class _GeluDropoutLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, p: float, seed: Optional[int], weight: torch.Tensor,  # type: ignore[override]
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.p, ctx.seed, ctx.has_bias = p, seed, bias is not None
        ctx.save_for_backward(h, weight)
        keep = None if seed is None else seeded_keep_mask(h.shape, p, seed)
        return F.linear(_dropped_gelu(h, p, keep), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h, weight = ctx.saved_tensors
        keep = None if ctx.seed is None else seeded_keep_mask(h.shape, ctx.p, ctx.seed)  # drawn once, used twice
        flat = grad.reshape(-1, grad.size(-1))  # (T * B, C)
        grad_w = grad_b = grad_h = None
        if ctx.needs_input_grad[3]:
            grad_w = flat.t() @ _dropped_gelu(h, ctx.p, keep).reshape(-1, h.size(-1))
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b = flat.sum(0)
        if ctx.needs_input_grad[0]:
            grad_a = grad @ weight
            if keep is not None:
                grad_a = apply_keep_(grad_a, keep, ctx.p)
            grad_h = torch.ops.aten.gelu_backward.grad_input(grad_a, h, grad_input=grad_a)  # in place: one buffer less
        return grad_h, None, None, grad_w, grad_b
