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
