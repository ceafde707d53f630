"""The context network: positional convolution plus a post-LN (BASE) or pre-LN (LARGE) Transformer."""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceABC
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from w2v2.models.config import Wav2Vec2Config
from w2v2.models.dropout import Dropout, dropout
from w2v2.models.lean_autograd import LeanLayerNorm, gelu_dropout_linear, stacked_linear

# (layer output (T, B, C), fc2 output before dropout and residual (T, B, C)) per layer; the second is None in a
# training forward with gradients (see TransformerEncoder.forward)
LayerResult = Tuple[torch.Tensor, Optional[torch.Tensor]]


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is `weight_v` scaled to norm `weight_g`, the norm taken per kernel tap.

    Parameter names and order (`bias`, `weight_g`, `weight_v`) are those of fairseq checkpoints,
    which used the old `torch.nn.utils.weight_norm(conv, dim=2)`.
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        weight = torch.empty(channels, channels // groups, kernel)
        nn.init.normal_(weight, mean=0.0, std=math.sqrt(4.0 / (kernel * channels)))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_g = nn.Parameter(weight.norm(dim=(0, 1), keepdim=True))
        self.weight_v = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    """Drop the extra last frame an even kernel with padding k//2 produces."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class MultiheadAttention(nn.Module):
    """Self-attention with fairseq's k/v/q/out projections (in that key order)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
                lengths: Optional[List[int]] = None) -> torch.Tensor:
        """(T, B, C) -> (T, B, C); or, given `lengths`, packed (N, C) tokens of utterances of those lengths, one
        after another, each attending only to itself."""
        if lengths is not None:
            return self._packed(x, lengths)
        tsz, bsz, dim = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:  # (T, B, C) -> (B, H, T, C/H)
            return t.view(tsz, bsz, self.heads, dim // self.heads).permute(1, 2, 0, 3)

        # One matmul over the stacked weights instead of three; the parameters stay fairseq's three.
        qkv = stacked_linear(x, self.q_proj, self.k_proj, self.v_proj)
        q, k, v = (split_heads(t) for t in qkv.chunk(3, dim=-1))
        out = self._attend(q, k, v, key_padding_mask)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(tsz, bsz, dim))

    def _packed(self, x: torch.Tensor, lengths: List[int]) -> torch.Tensor:
        dim = x.size(-1)
        qkv = stacked_linear(x, self.q_proj, self.k_proj, self.v_proj)
        outs = []
        for part in qkv.split(lengths):
            if not len(part):
                continue
            # (L, C) -> (1, H, L, C/H), views of the one qkv tensor that the backward keeps
            q, k, v = (t.view(len(part), self.heads, dim // self.heads).transpose(0, 1)[None] for t in part.chunk(3, -1))
            # out_proj per utterance: it keeps each attention output as the attention made it, not a joined copy
            outs.append(self.out_proj(self._attend(q, k, v, None).transpose(1, 2).reshape(len(part), dim)))
        return torch.cat(outs)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor]
                ) -> torch.Tensor:
        if self.training and self.dropout > 0 and q.device.type == "cpu":
            return _attention_with_dropout(q, k, v, key_padding_mask, self.dropout)
        allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)


def _attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
                            p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with dropout, times v: what SDPA computes, for the CPU, whose fused kernel has
    no dropout; SDPA's fallback also guards fully masked rows (none here: every utterance has a frame) and
    converts the mask, ~25 % of its time. The dropout is `w2v2.models.dropout`'s, which draws its random
    numbers ~9x faster than SDPA's."""
    scores = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-2, -1))
    if key_padding_mask is not None:
        scores.masked_fill_(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, training=True), v)


class TransformerSentenceEncoderLayer(nn.Module):
    """One Transformer layer; `layer_norm_first` picks pre-LN over post-LN."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.self_attn = MultiheadAttention(dim, cfg.encoder_attention_heads, cfg.attention_dropout)
        self.dropout1 = Dropout(cfg.dropout)
        self.dropout2 = Dropout(cfg.activation_dropout)
        self.dropout3 = Dropout(cfg.dropout)
        self.self_attn_layer_norm = LeanLayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = LeanLayerNorm(dim)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_dropout_linear(self.fc1(x), self.dropout2.p if self.training else 0.0, self.fc2)

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], lengths: Optional[List[int]] = None
                ) -> LayerResult:
        """(T, B, C) with its padding; or packed (N, C) tokens of utterances of `lengths` (see MultiheadAttention)."""
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), padding_mask, lengths))
            ffn = self._ffn(self.final_layer_norm(x))
            return x + self.dropout3(ffn), ffn
        x = self.self_attn_layer_norm(x + self.dropout1(self.self_attn(x, padding_mask, lengths)))
        ffn = self._ffn(x)
        return self.final_layer_norm(x + self.dropout3(ffn)), ffn


def init_bert_params(module: nn.Module) -> None:
    """fairseq's init for the Transformer: every Linear normal(0, 0.02) with zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class TransformerEncoder(nn.Module):
    """(B, T, C) features -> (B, T, C) context vectors, with per-layer results."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.dropout = cfg.dropout
        self.required_seq_len_multiple = cfg.required_seq_len_multiple
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups), SamePad(cfg.conv_pos), nn.GELU()
        )
        self.layers = nn.ModuleList(TransformerSentenceEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_norm = LeanLayerNorm(cfg.encoder_embed_dim)
        self.layerdrop = cfg.encoder_layerdrop
        self.checkpoint_activations = cfg.checkpoint_activations
        self.apply(init_bert_params)

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, layer: Optional[int] = None
    ) -> Tuple[torch.Tensor, Sequence[LayerResult]]:
        """Run the layers (up to and including `layer`, if given); LayerDrop skips layers in training.

        Each layer's result pairs its output with its FFN output, as fairseq's does, except in a training forward
        with gradients, where the FFN output is None: the backward does not need it, and kept it would hold a
        (T, B, C) tensor per layer to the end of the forward, the step's memory peak (55 MB at BASE, 2 x 15 s).
        The readers of FFN outputs, data2vec-style targets and feature extraction, run without gradients.

        A padded batch in training runs its layers on the real frames only (see `_packs`): every output at a
        frame that is not padding is what the padded computation gives, and the padding's outputs are zero."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x, padding_mask, pad_length = self._pad_time(x, padding_mask)
        if padding_mask is not None and self._packs(layer, x.device):
            keep = ~padding_mask
            lengths = keep.sum(1).tolist()  # the one host sync packing needs, which also says if there is padding
            if sum(lengths) < keep.numel():
                return self._run_packed(x, keep, lengths, pad_length)
        x = dropout(x, self.dropout, self.training)
        x = x.transpose(0, 1)  # (B, T, C) -> (T, B, C)
        x, results = self._run_layers(x, padding_mask, None, layer)
        if self.layer_norm_first and layer is None:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)  # (T, B, C) -> (B, T, C)
        if pad_length:
            x = x[:, :-pad_length]
            results = [(a[:-pad_length], None if b is None else b[:-pad_length]) for a, b in results]
        return x, results

    def _packs(self, layer: Optional[int], device: torch.device) -> bool:
        """Whether to run a padded batch's layers on the unpadded frames alone: in training, where the padding's outputs
        reach no loss, they cost a padded batch's share of the matmuls and activations (20 % of a 2 x 15 s
        batch whose second utterance is 9 s long). Not in evaluation, whose outputs at padded frames stay
        fairseq's, nor under torch.compile, where the number of frames would change the shapes every batch.
        On the CPU only, where it was measured: on a GPU every utterance's attention is kernel launches of its
        own, and the NPU compiles kernels per input shape, which would meet new shapes with every utterance."""
        return (device.type == "cpu" and self.training and torch.is_grad_enabled() and layer is None
                and not torch.compiler.is_compiling())

    def _run_layers(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], lengths: Optional[List[int]],
                    layer: Optional[int]) -> Tuple[torch.Tensor, List[LayerResult]]:
        """The last output (the input itself if LayerDrop skipped every layer) and each layer's result."""
        results: List[LayerResult] = []
        keep_ffn = not (self.training and torch.is_grad_enabled())
        for i, block in enumerate(self.layers):
            if not self.training or self.layerdrop == 0 or float(torch.rand(())) > self.layerdrop:
                if self.checkpoint_activations and torch.is_grad_enabled():
                    # recomputed in backward with the same dropout masks (the RNG state is replayed)
                    x, ffn = checkpoint(block, x, padding_mask, lengths, use_reentrant=False)
                else:
                    x, ffn = block(x, padding_mask, lengths)
                results.append((x, ffn if keep_ffn else None))
            if i == layer:
                break
        return x, results

    def _run_packed(self, x: torch.Tensor, keep: torch.Tensor, lengths: List[int], pad_length: int
                    ) -> Tuple[torch.Tensor, Sequence[LayerResult]]:
        packed = dropout(x[keep], self.dropout, self.training)  # (N, C): each utterance's frames in turn
        packed, results = self._run_layers(packed, None, lengths, None)
        if self.layer_norm_first:
            packed = self.layer_norm(packed)
        if pad_length:  # frames added by _pad_time: padding, so nothing of theirs is packed
            keep = keep[:, :-pad_length]
        return unpack(packed, keep), PackedLayerResults(results, keep)

    def _pad_time(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
        """Pad T to a multiple of `required_seq_len_multiple` (fast kernels like even lengths)."""
        pad_length = -x.size(1) % self.required_seq_len_multiple
        if not pad_length:
            return x, padding_mask, 0
        if padding_mask is None:
            padding_mask = x.new_zeros(x.shape[:2], dtype=torch.bool)
        x = F.pad(x, (0, 0, 0, pad_length))
        padding_mask = F.pad(padding_mask, (0, pad_length), value=True)
        return x, padding_mask, pad_length


def unpack(packed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N, C) frames back to (B, T, C) where `keep` (B, T) is set, zeros elsewhere."""
    return packed.new_zeros(*keep.shape, packed.size(-1)).masked_scatter(keep.unsqueeze(-1), packed)


class PackedLayerResults(SequenceABC):
    """The layer results of a packed run as the padded run's (T, B, C) pairs, each unpacked when it is read:
    unpacked at once, they would all be alive at the end of the forward, the step's memory peak."""

    def __init__(self, packed: List[LayerResult], keep: torch.Tensor) -> None:
        self._packed, self._keep = packed, keep

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        x, _ = self._packed[index]
        return self._unpack(x), None  # packing is for training with gradients, which keeps no FFN outputs

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        return unpack(packed, self._keep).transpose(0, 1)  # (T, B, C), as the padded run's
