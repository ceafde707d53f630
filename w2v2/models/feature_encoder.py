"""The convolutional feature encoder: raw waveform (B, L) -> features (B, C, T)."""

from __future__ import annotations

from typing import Callable, List

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


def _normed_first_two_blocks(source: torch.Tensor, first: nn.Sequential, second: nn.Sequential,
                             frames: int = 512, channels: int = 128) -> torch.Tensor:
    """gelu(conv2(gelu(norm(conv1(source))))) without grad, never holding the first block's whole output.

    That output, (B, 512, L/5), is the largest tensor of the model, twice the second block's. Its per-channel
    statistics come first, from torch's group norm over one utterance and `channels` channels at a time (the
    normalised values are dropped); then the second block runs over `frames` of its output frames at a time,
    recomputing just the stretch of the first block's output they read (the first conv, from one channel,
    costs ~1 % of the second). The values are the one-pass path's to within a few ulps: on some CPUs (this
    project's AVX2 machine among them) oneDNN rounds the conv of one utterance unlike the batch's, and so the
    statistics."""
    conv1, norm = first[0], first[2]
    (kernel,), (stride,) = conv1.kernel_size, conv1.stride
    x = source.unsqueeze(1)
    batch, width = x.size(0), conv1.out_channels
    length = (x.size(-1) - kernel) // stride + 1
    mean, rstd = x.new_empty(batch, width), x.new_empty(batch, width)
    for b in range(batch):
        for lo in range(0, width, channels):
            hi = min(lo + channels, width)
            bias = None if conv1.bias is None else conv1.bias[lo:hi]
            stats = torch.native_group_norm(F.conv1d(x[b: b + 1], conv1.weight[lo:hi], bias, stride=stride), None,
                                            None, 1, hi - lo, length, hi - lo, norm.eps)
            mean[b, lo:hi], rstd[b, lo:hi] = stats[1][0], stats[2][0]
            del stats  # the normalised block, before the next one is made
    # the norm is x * scale + shift, with shift = -scale * mean + bias: fused multiply-adds as in torch's kernel
    scale = rstd * norm.weight
    shift = torch.addcmul(norm.bias, -scale, mean).unsqueeze(-1)
    scale = scale.unsqueeze(-1)  # (B, C, 1)

    def normed(lo: int, hi: int) -> torch.Tensor:  # the first block's output frames lo..hi-1
        h = conv1(x[..., lo * stride: (hi - 1) * stride + kernel])
        return torch.ops.aten.gelu_(torch.addcmul(shift, h, scale, out=h))

    return _in_stretches(normed, length, second[0], frames)


def _in_stretches(read: Callable[[int, int], torch.Tensor], length: int, conv: nn.Conv1d,
                  frames: int = 512) -> torch.Tensor:
    """gelu(conv(input)) for an input of `length` frames, of which `read(lo, hi)` gives frames lo..hi-1, computed
    `frames` output frames at a time: only a stretch of the input is ever copied into the layout the CPU's conv
    kernel works in. The values are those of one conv over the whole input."""
    (kernel,), (stride,) = conv.kernel_size, conv.stride
    out_length = (length - kernel) // stride + 1
    if out_length < 1:  # too short: let torch's conv say so
        return conv(read(0, length))
    out = None
    for lo in range(0, out_length, frames):
        hi = min(lo + frames, out_length)
        part = torch.ops.aten.gelu_(conv(read(lo * stride, (hi - 1) * stride + kernel)))
        if out is None:
            out = part.new_empty(part.size(0), part.size(1), out_length)
        out[..., lo:hi] = part  # gelu.out would not write into this strided view
    return out


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
        blocks = list(self.conv_layers)
        if not torch.is_grad_enabled() and source.dtype == torch.float32 and not torch.is_autocast_enabled(
                source.device.type):
            return self._forward_frozen(source, blocks)
        x = source.unsqueeze(1)  # (B, L) -> (B, 1, L)
        for block in blocks:
            x = block(x)
        return x

    def _forward_frozen(self, source: torch.Tensor, blocks: List[nn.Module]) -> torch.Tensor:
        """Frozen or inference: the same values (to a few ulps) with fewer copies of the largest tensors, since
        nothing keeps them for a backward: the GELUs work in place, and the first two blocks of the default mode
        run in stretches of time (the group-norm block's output alone would be 2 x 15 s x 512 channels: 197 MB)."""
        if isinstance(blocks[0][2], Fp32GroupNorm) and len(blocks) > 1 and len(blocks[1]) == 3:
            x, rest = _normed_first_two_blocks(source, blocks[0], blocks[1]), blocks[2:]
        else:
            x, rest = source.unsqueeze(1), blocks
        for block in rest:
            if len(block) == 3:  # conv, dropout (p = 0), GELU
                x = _in_stretches(lambda lo, hi, x=x: x[..., lo:hi], x.size(-1), block[0])
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
