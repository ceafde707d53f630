"""Our model's outputs on the input that ../shared/oracle/fairseq_outputs.py feeds fairseq's model."""

from __future__ import annotations

import os
from typing import Dict, Union

import torch

import w2v2
from w2v2.models.ctc import Wav2Vec2Ctc


def our_outputs(checkpoint: Union[str, os.PathLike], reference: Dict[str, torch.Tensor]) -> torch.Tensor:
    """What fairseq_outputs.py computes with fairseq, computed by our loader and model."""
    model = w2v2.load_model(checkpoint)
    with torch.no_grad():
        if isinstance(model, Wav2Vec2Ctc):
            net = model(reference["source"], padding_mask=reference["padding_mask"])
            return model.get_normalized_probs(net, log_probs=True).float()
        return model(reference["source"], padding_mask=None, mask=False, features_only=True)["x"]


def relative_error(ours: torch.Tensor, reference: Dict[str, torch.Tensor]) -> float:
    """max|ours - fairseq| / max|fairseq| over finite entries; inf if shapes or -inf entries differ."""
    expected = reference["lprobs" if reference["kind"] == "ctc" else "x"]
    finite = torch.isfinite(expected)
    if ours.shape != expected.shape or not torch.equal(finite, torch.isfinite(ours)):
        return float("inf")
    return float((ours - expected)[finite].abs().max() / expected[finite].abs().max())
