"""Transcribing audio files of any length, sample rate and channel count with a CTC model: greedy letters,
words and their times from the best path.

Long files are cut into overlapping windows. Every window starts on the frame grid (a multiple of the
feature encoder's hop), so its frames are frames of the whole file; each window gives up half of the
overlap at either edge, where it lacks context, and the frames kept from all windows are joined into
the file's sequence before decoding, so no word is cut, doubled or lost at a window's edge.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import soundfile
import soxr
import torch

from w2v2.data.audio import read_audio
from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.inference.decoding import SILENCE, GreedyDecoder
from w2v2.inference.features import check_finite, check_waveform, encoder_of, model_input
from w2v2.models.ctc import Wav2Vec2Ctc

SAMPLE_RATE = 16000


@dataclass
class WordTiming:
    """A word and the times (seconds) of its first letter's first frame and last letter's last frame."""

    word: str
    start: float
    end: float


@dataclass
class Transcript:
    """The text of one file, with word timings."""

    path: str
    duration: float
    text: str
    words: List[WordTiming] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict, times rounded to milliseconds."""
        words = [{**asdict(w), "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words]
        return {"path": self.path, "duration": round(self.duration, 3), "text": self.text, "words": words}


def load_audio(path: Union[str, os.PathLike]) -> np.ndarray:
    """A file's samples as 16 kHz mono float32 (channels averaged, other rates resampled with soxr)."""
    try:
        rate = soundfile.info(str(path)).samplerate
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise W2v2Error(f"audio file {path} cannot be opened ({error}); it must exist and be wav, flac or ogg."
                        ) from error
    samples = read_audio(path, expected_rate=rate)
    if rate == SAMPLE_RATE:
        return samples
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def hop_samples(model: Wav2Vec2Ctc) -> int:
    """Samples between two frames: the product of the feature encoder's strides (320, 20 ms)."""
    return int(np.prod([stride for _, _, stride in encoder_of(model).feature_extractor.conv_spec]))


def window_starts(num_samples: int, window: int, overlap: int) -> List[int]:
    """First samples of windows of `window` samples, `window - overlap` apart, covering `num_samples`."""
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + window - overlap)
    return starts


@torch.no_grad()
def frame_log_probs(model: Wav2Vec2Ctc, waveform: np.ndarray, window_seconds: float = 30.0,
                    overlap_seconds: float = 4.0) -> torch.Tensor:
    """(T, V) log-probabilities of a 16 kHz waveform, computed in windows and joined on the frame grid."""
    if not (math.isfinite(window_seconds) and math.isfinite(overlap_seconds)):
        raise W2v2Error(f"`--window-seconds` and `--overlap-seconds` must be finite numbers, but they are "
                        f"{window_seconds} and {overlap_seconds} instead.")
    hop = hop_samples(model)
    window = round(window_seconds * SAMPLE_RATE / hop) * hop
    overlap_frames = 2 * round(overlap_seconds * SAMPLE_RATE / hop / 2)  # even, so that each side gets half
    if overlap_frames < 2 or window <= overlap_frames * hop:
        raise W2v2Error(f"`--window-seconds` must exceed `--overlap-seconds`, which must be at least "
                        f"{2 * hop / SAMPLE_RATE} s, but they are {window_seconds} and {overlap_seconds} instead.")
    starts = window_starts(len(waveform), window, overlap_frames * hop)
    # Window k keeps the file's frames [cuts[k], cuts[k + 1]); the last keeps all it has.
    cuts = [0] + [start // hop + overlap_frames // 2 for start in starts[1:]] + [None]
    pieces = []
    for k, start in enumerate(starts):
        lprobs = _window_log_probs(model, waveform[start : start + window])
        first = cuts[k] - start // hop
        last = None if cuts[k + 1] is None else cuts[k + 1] - start // hop
        pieces.append(lprobs[first:last])
    return torch.cat(pieces)


def _window_log_probs(model: Wav2Vec2Ctc, samples: np.ndarray) -> torch.Tensor:
    """(T, V) log-probabilities of one window, on the CPU."""
    net_output = model(model_input(model, samples))
    return model.get_normalized_probs(net_output, log_probs=True)[:, 0].cpu()  # (T, 1, V) -> (T, V)


def word_timings(alignment: torch.Tensor, dictionary: Dictionary, frame_seconds: float) -> List[WordTiming]:
    """Words of a CTC frame alignment (repeats merged, blanks dropped, `|` between words) with times."""
    # Special symbols (the CTC blank `<s>`, `<pad>`, `<unk>`, ...) are not text: like the blank, they
    # separate repeated letters and are not shown.
    blanks = {index for index in range(len(dictionary)) if dictionary.is_special(index)}
    silence = dictionary.indices.get(SILENCE)
    words: List[WordTiming] = []
    letters: List[str] = []
    start = end = previous = -1
    for frame, symbol in enumerate(alignment.tolist()):
        if symbol == previous and symbol not in blanks and symbol != silence and letters:
            end = frame + 1
        elif symbol == silence and letters:
            words.append(WordTiming("".join(letters), start * frame_seconds, end * frame_seconds))
            letters = []
        elif symbol not in blanks and symbol != silence and symbol != previous:
            start = frame if not letters else start
            letters.append(dictionary[symbol])
            end = frame + 1
        previous = symbol
    if letters:
        words.append(WordTiming("".join(letters), start * frame_seconds, end * frame_seconds))
    return words


def transcribe(model: Wav2Vec2Ctc, path: Union[str, os.PathLike], window_seconds: float = 30.0,
               overlap_seconds: float = 4.0) -> Transcript:
    """Greedy transcript of one audio file, with the times of its words."""
    if model.dictionary is None:
        raise W2v2Error("the checkpoint stores no dictionary, so its outputs cannot be turned into letters; "
                        "use a checkpoint fine-tuned by fairseq or w2v2.")
    waveform = load_audio(path)
    check_waveform(model, waveform, path)
    lprobs = frame_log_probs(model, waveform, window_seconds, overlap_seconds)
    check_finite(lprobs, f"audio file {path}")
    alignment = GreedyDecoder().alignments(lprobs[:, None], torch.tensor([len(lprobs)]))[0]
    words = word_timings(alignment, model.dictionary, hop_samples(model) / SAMPLE_RATE)
    return Transcript(str(Path(path)), len(waveform) / SAMPLE_RATE, " ".join(w.word for w in words), words)
