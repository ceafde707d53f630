"""Context features of a trained model for downstream use: one (T, C) array per utterance."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from w2v2.errors import W2v2Error
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model


def expects_normalized_input(model: Union[Wav2Vec2Model, Wav2Vec2Ctc]) -> bool:
    """Whether the model was trained on zero-mean, unit-variance waveforms (the LARGE recipes)."""
    if isinstance(model, Wav2Vec2Ctc):
        return model.cfg.normalize
    task = model.fairseq_cfg.get("task") or {}
    return bool(task.get("normalize", False))


def encoder_of(model: Union[Wav2Vec2Model, Wav2Vec2Ctc]) -> Wav2Vec2Model:
    """The wav2vec 2.0 network inside either model kind."""
    return model.w2v_encoder.w2v_model if isinstance(model, Wav2Vec2Ctc) else model


def model_input(model: Union[Wav2Vec2Model, Wav2Vec2Ctc], waveform: np.ndarray) -> torch.Tensor:
    """A mono waveform as the (1, L) float32 source the model expects, on its device (normalised
    when it was trained on normalised audio)."""
    device = next(model.parameters()).device
    source = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).to(device)
    if expects_normalized_input(model):
        source = F.layer_norm(source, source.shape)
    return source.unsqueeze(0)


@torch.no_grad()
def extract_features(
    model: Union[Wav2Vec2Model, Wav2Vec2Ctc], waveform: np.ndarray, layer: Optional[int] = None
) -> np.ndarray:
    """(T, C) features of one mono 16 kHz waveform: the last layer, or Transformer layer `layer` (0-based)."""
    network = encoder_of(model)
    layers = len(network.encoder.layers)
    if layer is not None and not 0 <= layer < layers:
        raise W2v2Error(f"`--layer` must be between 0 and {layers - 1} for this model, but is {layer} instead.")
    out = network.extract_features(model_input(model, waveform), layer=layer)
    if layer is None:
        return out["x"][0].float().cpu().numpy()
    return out["layer_results"][layer][0][:, 0].float().cpu().numpy()  # (T, B, C) -> (T, C)
