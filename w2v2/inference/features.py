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


def min_samples(model: Union[Wav2Vec2Model, Wav2Vec2Ctc]) -> int:
    """The fewest samples that give one frame: the feature encoder's receptive field (400 for BASE)."""
    samples = 1
    for _, kernel, stride in reversed(encoder_of(model).feature_extractor.conv_spec):
        samples = (samples - 1) * stride + kernel
    return samples


def check_waveform(model: Union[Wav2Vec2Model, Wav2Vec2Ctc], waveform: np.ndarray, path: object) -> None:
    """Refuse audio the model cannot encode: shorter than one frame, or with NaN or infinite samples."""
    shortest = min_samples(model)
    if len(waveform) < shortest:
        raise W2v2Error(f"audio file {path} is too short: it has {len(waveform)} samples at 16 kHz, but the model "
                        f"needs at least {shortest} ({shortest / 16000 * 1000:g} ms) for one frame.")
    bad = int(np.count_nonzero(~np.isfinite(waveform)))
    if bad:
        raise W2v2Error(f"audio file {path} holds {bad} NaN or infinite samples (of {len(waveform)}); the model's "
                        "output on it would be NaN, so it was refused. Re-export the file.")


def check_finite(values: torch.Tensor, what: str) -> None:
    """Refuse a NaN model output instead of turning it into empty text or NaN features (log-probabilities
    may be -inf: padded frames get -inf for every letter but the blank)."""
    if bool(torch.isnan(values).any()):
        raise W2v2Error(f"the model's output for {what} is NaN although the input is finite; the "
                        "checkpoint may hold diverged weights, or the precision may overflow (try --precision fp32).")


@torch.no_grad()
def extract_features(
    model: Union[Wav2Vec2Model, Wav2Vec2Ctc], waveform: np.ndarray, layer: Optional[int] = None,
    name: object = "the waveform",
) -> np.ndarray:
    """(T, C) features of one mono 16 kHz waveform: the last layer, or Transformer layer `layer` (0-based);
    errors name the input as `name`."""
    network = encoder_of(model)
    layers = len(network.encoder.layers)
    if layer is not None and not 0 <= layer < layers:
        raise W2v2Error(f"`--layer` must be between 0 and {layers - 1} for this model, but is {layer} instead.")
    check_waveform(model, waveform, name)
    out = network.extract_features(model_input(model, waveform), layer=layer)
    features = out["x"][0] if layer is None else out["layer_results"][layer][0][:, 0]  # (T, B, C) -> (T, C)
    check_finite(features, f"audio file {name}")
    return features.float().cpu().numpy()
