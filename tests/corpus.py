"""A tiny noise corpus in LibriSpeech layout, prepared into fairseq manifests, for training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from w2v2.data.librispeech import prepare_librispeech

FIXTURE_CONFIGS = Path(__file__).parent / "fixtures" / "fairseq" / "configs"
WORDS = ["ONE", "TWO", "THREE", "GO", "STOP", "LEFT"]


def write_corpus(root: Path, seed: int = 0) -> Path:
    """24 train and 8 dev utterances of 1-2 s noise with three-word transcripts; returns manifest/."""
    rng = np.random.default_rng(seed)
    for split, speakers in (("train-clean-100", (101, 102, 103)), ("dev-clean", (201,))):
        for speaker in speakers:
            folder = root / split / str(speaker) / "7"
            folder.mkdir(parents=True)
            lines = []
            for utt in range(8):
                name = f"{speaker}-7-{utt:04d}"
                frames = int(rng.integers(16000, 32000))
                soundfile.write(folder / f"{name}.flac", (rng.standard_normal(frames) * 0.1).astype(np.float32), 16000)
                lines.append(f"{name} {' '.join(rng.choice(WORDS, 3))}\n")
            (folder / f"{speaker}-7.trans.txt").write_text("".join(lines))
    prepare_librispeech(root)
    return root / "manifest"

