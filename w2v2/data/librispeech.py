"""One step from a LibriSpeech download to fairseq's fine-tuning files: manifests, labels, dictionary."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import soundfile
from tqdm import tqdm

from w2v2.data.dictionary import dictionary_from_lines
from w2v2.data.labels import letters, save_dictionary, transcripts
from w2v2.data.manifest import (
    PathLike,
    SkippedFile,
    existing_dir,
    format_manifest,
    join_lines,
    skipped_files,
    usable_audio,
    writable_dir,
)
from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write, write_texts_atomically

# Searched in this order: LibriSpeech ships flac, the bundled demo corpus Ogg/Opus.
AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "opus")
SPLIT_PREFIXES = ("train", "dev", "test")
# The subsets fairseq's base_100h recipe trains and validates on.
TRAIN_SPLIT = "train-clean-100"
VALID_SPLIT = "dev-clean"


@dataclass
class SubsetSummary:
    """One written subset (`train`, `valid`, `dev_other`, ...): its source splits and size."""

    name: str
    splits: List[str]
    utterances: int
    seconds: float


@dataclass
class LibriSpeechSummary:
    """What `prepare_librispeech` wrote, and the audio files it skipped."""

    dest: Path
    ext: str
    subsets: List[SubsetSummary]
    symbols: int
    skipped: List[SkippedFile] = field(default_factory=list)

    def line(self) -> str:
        """One-line summary for the console."""
        sizes = ", ".join(f"{s.name} {s.utterances} utt ({s.seconds / 3600:.2f} h)" for s in self.subsets)
        return (
            f"wrote {sizes} and dict.ltr.txt ({self.symbols} symbols) from *.{self.ext} audio to {self.dest}; "
            f"skipped {len(self.skipped)} files"
        )


def prepare_librispeech(
    data_path: PathLike, dest: Optional[PathLike] = None, workers: Optional[int] = None
) -> LibriSpeechSummary:
    """Write `{train,valid,dev_other,...}.{tsv,wrd,ltr}` and `dict.ltr.txt` for the splits under `data_path`.

    `train` is train-clean-100 (else every `train*` split together), `valid` is dev-clean (else the
    first `dev*` split); every split but train-clean-100 also gets a subset named after it
    (`dev_clean`, `test_other`, ...). Each manifest holds its whole split (fairseq's
    `--valid-percent 0`); `dest` defaults to `data_path/manifest`.
    """
    data = existing_dir(data_path, "the LibriSpeech directory")
    out = writable_dir(dest if dest is not None else Path(data, "manifest"))
    splits = find_splits(data, exclude=os.path.realpath(out))
    ext = detect_extension(data, splits)
    scanned = {split: usable_audio(os.path.join(data, split), ext, workers=workers) for split in splits}
    outputs: Dict[Path, str] = {}
    summaries = []
    for name, members in plan_subsets(splits).items():
        # A subset of several splits is rooted at `data_path`, so its paths start with the split names.
        root = os.path.realpath(os.path.join(data, members[0])) if len(members) == 1 else data
        files = [f for split in members for f in scanned[split] if f.problem is None]
        words = transcripts(root, [os.path.relpath(f.path, root) for f in files])
        outputs[out / f"{name}.tsv"] = format_manifest(root, files)
        outputs[out / f"{name}.wrd"] = join_lines(words)
        outputs[out / f"{name}.ltr"] = join_lines(letters(w) for w in words)
        summaries.append(SubsetSummary(name, list(members), len(files), sum(f.seconds for f in files)))
    dictionary = dictionary_from_lines(outputs[out / "train.ltr"].splitlines())
    save_dictionary(dictionary, out / "dict.ltr.txt")
    write_texts_atomically(outputs)
    skipped = [s for split in splits for s in skipped_files(scanned[split])]
    return LibriSpeechSummary(out, ext, summaries, len(dictionary) - dictionary.nspecial, skipped)


def decoded_copy(data_path: PathLike, dest: PathLike) -> Path:
    """`dest`: the LibriSpeech tree `data_path` with its compressed audio decoded to 16-bit WAV (other files
    copied), for runs of many epochs on a small corpus: decoding Ogg/Opus took ~12 % of a demo update on
    2 cores. Files already there with the same length are kept, so a second call costs a scan."""
    data, out = Path(existing_dir(data_path, "the corpus directory")), Path(dest)
    files = sorted(p for p in data.rglob("*") if p.is_file() and not p.is_relative_to(out))
    for path in tqdm(files, desc=f"decoding {data.name}", unit="file", leave=False):
        target = out / path.relative_to(data)
        audio = path.suffix.lstrip(".") in AUDIO_EXTENSIONS and path.suffix != ".wav"
        if audio:
            target = target.with_suffix(".wav")
            if target.is_file() and soundfile.info(str(target)).frames == soundfile.info(str(path)).frames:
                continue
        elif target.is_file() and target.stat().st_size == path.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb") as handle:
            if audio:
                samples, rate = soundfile.read(str(path), dtype="int16")
                soundfile.write(handle, samples, rate, subtype="PCM_16", format="WAV")
            else:
                with open(path, "rb") as source:
                    shutil.copyfileobj(source, handle)
    return out


def find_splits(data: str, exclude: str = "") -> List[str]:
    """Names of the LibriSpeech split folders (`train*`, `dev*`, `test*`) in `data`, sorted."""
    splits = sorted(
        entry.name
        for entry in os.scandir(data)
        if entry.is_dir() and entry.name.startswith(SPLIT_PREFIXES) and os.path.realpath(entry.path) != exclude
    )
    if not any(s.startswith("train") for s in splits):
        raise W2v2Error(
            f"the LibriSpeech directory must hold a train split (train-clean-100/, ...), but {data} holds "
            f"{', '.join(splits) or 'no split folders'} instead (point it at the folder that contains the splits)."
        )
    return splits


def detect_extension(data: str, splits: Sequence[str]) -> str:
    """The audio extension of the corpus: the first of `AUDIO_EXTENSIONS` found in the first audio folder."""
    for split in splits:
        for _, _, names in os.walk(os.path.join(data, split), followlinks=True):
            found = {name.rpartition(".")[2] for name in names}
            for ext in AUDIO_EXTENSIONS:
                if ext in found:
                    return ext
    raise W2v2Error(
        f"the splits {', '.join(splits)} of {data} must hold audio files "
        f"({', '.join('*.' + e for e in AUDIO_EXTENSIONS)}), but hold none."
    )


def plan_subsets(splits: Sequence[str]) -> Dict[str, List[str]]:
    """Subset name -> the splits it is made of."""
    trains = [s for s in splits if s.startswith("train")]
    devs = [s for s in splits if s.startswith("dev")]
    subsets = {"train": [TRAIN_SPLIT] if TRAIN_SPLIT in splits else trains}
    if devs:
        subsets["valid"] = [VALID_SPLIT] if VALID_SPLIT in splits else devs[:1]
    for split in splits:
        if split != TRAIN_SPLIT:
            subsets[split.replace("-", "_")] = [split]
    return subsets
