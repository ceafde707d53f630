"""Reading one audio file as a mono float32 waveform, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from w2v2.errors import W2v2Error


def read_audio(path: str | os.PathLike, expected_rate: int = 16000) -> np.ndarray:
    """Samples of `path` as a 1-D float32 array; several channels are averaged to mono."""
    path = Path(path)
    if not path.is_file():
        raise W2v2Error(f"audio file {path} does not exist; check the manifest's root line and the file's path.")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise W2v2Error(f"audio file {path} cannot be decoded ({error}); the file is corrupt or not audio.") from error
    if rate != expected_rate:
        raise W2v2Error(
            f"the sample rate of {path} must be {expected_rate} Hz, but is {rate} Hz instead; "
            "resample the corpus first (no resampling happens while training)."
        )
    if samples.shape[0] == 0:
        raise W2v2Error(f"audio file {path} is empty (0 frames); remove it from the manifest.")
    # (frames, channels) -> (frames,): fairseq averages the channels of multi-channel files.
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
