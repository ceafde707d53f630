"""Our model's outputs on the input that ../shared/oracle/fairseq_outputs.py feeds fairseq's model
(used by the frozen oracle tests and by compare_outputs.py; needs no fairseq)."""

from __future__ import annotations

import os
from typing import Union

import torch

import w2v2
from w2v2.models.ctc import Wav2Vec2Ctc


def our_outputs(checkpoint: Union[str, os.PathLike], source: torch.Tensor,
                padding_mask: torch.Tensor) -> torch.Tensor:
    """What fairseq_outputs.py computes with fairseq: CTC log-probs (T, B, V) or features_only `x` (B, T, C)."""
    model = w2v2.load_model(checkpoint)
    with torch.no_grad():
        if isinstance(model, Wav2Vec2Ctc):
            net = model(source, padding_mask=padding_mask)
            return model.get_normalized_probs(net, log_probs=True).float()
        return model(source, padding_mask=None, mask=False, features_only=True)["x"]


def relative_error(ours: torch.Tensor, expected: torch.Tensor) -> float:
    """max|ours - fairseq| / max|fairseq| over the finite entries; inf if the shapes or the -inf entries
    (padded frames forced to blank) differ."""
    finite = torch.isfinite(expected)
    if ours.shape != expected.shape or not torch.equal(finite, torch.isfinite(ours)):
        return float("inf")
    return float((ours - expected)[finite].abs().max() / expected[finite].abs().max())
