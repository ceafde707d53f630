"""A tiny LibriSpeech-layout corpus written with soundfile: speakers, chapters, flac and trans.txt."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import soundfile

# split -> SPEAKER-CHAPTER -> transcripts of utterances 0000, 0001, ...
CORPUS: Dict[str, Dict[str, list]] = {
    "train-clean-100": {
        "19-198": ["TO HE", "HE SAID DON'T GO", "A QUIET  ROOM"],
        "19-227": ["ZEBRAS JUMP"],
        "26-495": ["THE QUICK BROWN FOX", "OF THE", "X Y Z"],
    },
    "dev-clean": {"84-121123": ["GO DO IT", "WE'LL SEE"]},
    "test-other": {"1688-142285": ["ONE TWO THREE"]},
}


def write_audio(path: Path, frames: int, sample_rate: int = 16000, channels: int = 1) -> Path:
    """Write `frames` frames of quiet 16-bit noise to `path` (format from its extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(frames).integers(-300, 300, size=(frames, channels), dtype=np.int16)
    soundfile.write(path, noise, sample_rate, subtype="PCM_16" if path.suffix != ".ogg" else None)
    return path


def build_tree(data: Path, ext: str = "flac") -> Path:
    """Write `CORPUS` under `data` in LibriSpeech layout; utterance lengths differ (800 + 37 i frames)."""
    index = 0
    for split, chapters in CORPUS.items():
        for chapter_id, texts in chapters.items():
            speaker, chapter = chapter_id.split("-")
            folder = data / split / speaker / chapter
            lines = []
            for number, text in enumerate(texts):
                utterance = f"{chapter_id}-{number:04d}"
                write_audio(folder / f"{utterance}.{ext}", 800 + 37 * index)
                lines.append(f"{utterance} {text}\n")
                index += 1
            (folder / f"{chapter_id}.trans.txt").write_text("".join(lines), encoding="ascii")
    return data


@pytest.fixture
def librispeech(tmp_path: Path) -> Path:
    """A data directory holding train-clean-100/, dev-clean/ and test-other/ with flac audio."""
    return build_tree(tmp_path / "LibriSpeech")


@pytest.fixture
def audio_writer() -> Callable[..., Path]:
    """`write_audio(path, frames, sample_rate=16000, channels=1)` for tests that add their own files."""
    return write_audio


@pytest.fixture
def tree_builder() -> Callable[..., Path]:
    """`build_tree(data, ext="flac")` for tests that need the corpus in another audio format."""
    return build_tree
