"""`w2v2 features`: write wav2vec 2.0 features of audio files as .npy arrays."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from w2v2.data.audio import read_audio
from w2v2.errors import W2v2Error, paragraph
from w2v2.fileio import atomic_write
from w2v2.inference.features import extract_features, min_samples
from w2v2.interop.checkpoints import load_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="extract features of audio files to .npy (T x C)")
    parser.add_argument("--checkpoint", required=True, help="fairseq or w2v2 checkpoint (pretrained or fine-tuned)")
    parser.add_argument("audio", nargs="+", help="16 kHz audio files (wav, flac, ogg)")
    parser.add_argument("--output-dir", required=True, help="where to write one NAME.npy per input")
    parser.add_argument("--layer", type=int, default=None, help="Transformer layer (0-based); default: the output")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow a checkpoint with arbitrary pickles")
    parser.set_defaults(func=run)


def check_header(path: str, shortest: int) -> None:
    """Refuse a file that is missing, not audio, not 16 kHz, or shorter than `shortest` samples, from its header."""
    try:
        info = soundfile.info(path)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise W2v2Error(f"audio file {path} cannot be opened ({paragraph(error)}); it must exist and be wav, flac "
                        "or ogg.") from error
    if info.samplerate != 16000:
        raise W2v2Error(f"the sample rate of {path} must be 16000 Hz, but is {info.samplerate} Hz instead; "
                        "resample it first.")
    if info.frames < shortest:
        raise W2v2Error(f"audio file {path} is too short: it has {info.frames} samples, but the model needs at "
                        f"least {shortest} ({shortest / 16000 * 1000:g} ms) for one frame.")


def run(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, trusted=args.trust_checkpoint)
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(f"`--output-dir` {out_dir} cannot be created: {error.strerror}.") from error
    names = [Path(p).stem for p in args.audio]
    if len(set(names)) != len(names):
        raise W2v2Error("two inputs share a file name, so their .npy outputs would overwrite each other.")
    shortest = min_samples(model)
    for path in args.audio:  # every input is checked before any output is written
        check_header(path, shortest)
    frames = 0
    for path, name in zip(tqdm(args.audio, desc="features", unit="file"), names):
        features = extract_features(model, read_audio(path), args.layer, name=path)
        target = out_dir / f"{name}.npy"
        with atomic_write(target, "wb") as handle:
            np.save(handle, features)
        frames += features.shape[0]
    print(f"wrote {len(names)} feature files ({frames} frames, dim {features.shape[1]}) to {out_dir}")
    return 0
