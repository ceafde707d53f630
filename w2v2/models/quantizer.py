"""Gumbel-softmax product quantizer: G groups of V codebook entries each."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _perplexity(probs: torch.Tensor) -> torch.Tensor:
    """Sum over groups of exp(entropy) of the (G, V) distributions."""
    return torch.exp(-torch.sum(probs * torch.log(probs + 1e-7), dim=-1)).sum()


class GumbelVectorQuantizer(nn.Module):
    """Maps (B, T, C) features to (B, T, vq_dim) codebook vectors, concatenated over groups."""

    def __init__(self, dim: int, num_vars: int, temp: Tuple[float, float, float], groups: int, vq_dim: int) -> None:
        super().__init__()
        self.groups = groups
        self.num_vars = num_vars
        self.vars = nn.Parameter(torch.empty(1, groups * num_vars, vq_dim // groups))
        nn.init.uniform_(self.vars)
        self.weight_proj = nn.Linear(dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.max_temp, self.min_temp, self.temp_decay = temp
        self.curr_temp = self.max_temp

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal the Gumbel temperature: max(start * decay^updates, floor)."""
        self.curr_temp = max(self.max_temp * self.temp_decay**num_updates, self.min_temp)

    def forward(self, x: torch.Tensor, produce_targets: bool = False) -> Dict[str, object]:
        bsz, tsz, fsz = x.shape
        logits = self.weight_proj(x.reshape(-1, fsz)).view(bsz * tsz * self.groups, -1)  # (B*T*G, V)
        with torch.no_grad():
            hard = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
            hard = hard.view(bsz * tsz, self.groups, -1)
            code_perplexity = _perplexity(hard.float().mean(dim=0))
        soft = torch.softmax(logits.view(bsz * tsz, self.groups, -1).float(), dim=-1)
        result: Dict[str, object] = {
            "num_vars": self.num_vars * self.groups,
            "code_perplexity": code_perplexity,
            "prob_perplexity": _perplexity(soft.mean(dim=0)),
            "temp": self.curr_temp,
        }
        if self.training:
            onehot = F.gumbel_softmax(logits.float(), tau=self.curr_temp, hard=True).type_as(logits)
        else:
            onehot = hard
        onehot = onehot.reshape(bsz * tsz, -1)  # (B*T, G*V)
        if produce_targets:
            result["targets"] = onehot.view(bsz * tsz * self.groups, -1).argmax(-1).view(bsz, tsz, self.groups)
        # (G, B*T, V) @ (G, V, D/G) -> (B, T, D): fairseq's broadcast product summed over V, as one batched
        # matmul; with one nonzero per row the forward values are the same bits.
        codebook = self.vars.view(self.groups, self.num_vars, -1)
        vectors = torch.bmm(onehot.view(bsz * tsz, self.groups, -1).transpose(0, 1), codebook)
        result["x"] = vectors.transpose(0, 1).reshape(bsz, tsz, -1)
        return result
