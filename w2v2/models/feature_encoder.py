"""The convolutional feature encoder: raw waveform (B, L) -> features (B, C, T)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from w2v2.models.config import ConvSpec


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in fp32 so fp16 training keeps fairseq's statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return y.type_as(x)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return y.type_as(x)


class TransposeLast(nn.Module):
    """Swap the last two dimensions, so a LayerNorm can normalise channels of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int, norm: str, bias: bool) -> nn.Sequential:
    """One block; module indices match fairseq's keys (`.0` conv, `.2` norm)."""
    conv = nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=bias)
    nn.init.kaiming_normal_(conv.weight)
    if norm == "layer_norm":
        channel_norm = nn.Sequential(TransposeLast(), Fp32LayerNorm(n_out), TransposeLast())
        return nn.Sequential(conv, nn.Dropout(0.0), channel_norm, nn.GELU())
    if norm == "group_norm":
        return nn.Sequential(conv, nn.Dropout(0.0), Fp32GroupNorm(n_out, n_out), nn.GELU())
    return nn.Sequential(conv, nn.Dropout(0.0), nn.GELU())


def _group_norm_gelu_(x: torch.Tensor, norm: nn.GroupNorm, channels: int = 128) -> torch.Tensor:
    """gelu(norm(x)) written into x, for a norm with one group per channel; (B, C, T), contiguous.

    With a group per channel the statistics of a block of channels are those of the whole, so each block
    (one utterance, `channels` channels: contiguous in x) is torch's own group norm, the same values, and
    only a block's worth of it is ever allocated."""
    x = x.contiguous()
    for b in range(x.size(0)):
        for lo in range(0, x.size(1), channels):
            block = x[b: b + 1, lo: lo + channels]
            normed = F.group_norm(block, block.size(1), norm.weight[lo: lo + channels], norm.bias[lo: lo + channels],
                                  norm.eps)
            torch.ops.aten.gelu.out(normed, out=block)
    return x


class ConvFeatureExtractionModel(nn.Module):
    """Strided 1-D convolutions over the waveform; fairseq's module of the same name."""

    def __init__(self, conv_layers: ConvSpec, mode: str = "default", conv_bias: bool = False) -> None:
        super().__init__()
        self.conv_spec = list(conv_layers)
        blocks: List[nn.Module] = []
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(self.conv_spec):
            if mode == "layer_norm":
                norm = "layer_norm"
            else:  # "default": only the first block is normalised, over time, per channel
                norm = "group_norm" if i == 0 else "none"
            blocks.append(_conv_block(in_dim, dim, kernel, stride, norm, conv_bias))
            in_dim = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = source.unsqueeze(1)  # (B, L) -> (B, 1, L)
        for block in self.conv_layers:
            norm = block[2] if len(block) > 3 else None
            if isinstance(norm, Fp32GroupNorm) and not torch.is_grad_enabled() and x.dtype == torch.float32:
                # frozen or inference: the first block's output is the largest tensor of the model (B, 512, L/5),
                # and normalising it in place keeps one copy of it instead of two
                x = _group_norm_gelu_(block[0](x), norm)
            else:
                x = block(x)
        return x

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Number of output frames for each input length (fairseq's floor formula)."""
        lengths = input_lengths
        for _, kernel, stride in self.conv_spec:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.to(torch.long)


class GradMultiply(torch.autograd.Function):
    """Identity forward; scales the gradient by `scale` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None
