"""fairseq's audio manifests (`train.tsv`): the audio root on line 1, then `relative/path<TAB>frames`."""

from __future__ import annotations

import functools
import glob
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import soundfile
from tqdm import tqdm

from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically

PathLike = Union[str, os.PathLike]
SAMPLE_RATE = 16000


@dataclass
class AudioFile:
    """One audio file found under a root: its real path, its length, and why it is unusable, if it is."""

    path: str
    frames: int = 0
    sample_rate: int = 0
    problem: Optional[str] = None
    found: str = ""  # the path as the search found it, through links (listed when the real path leaves the root)

    @property
    def seconds(self) -> float:
        """Duration in seconds (0 for an unreadable file)."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass
class SkippedFile:
    """An audio file left out of a manifest, and why."""

    path: str
    reason: str


@dataclass
class ManifestSummary:
    """What `write_manifest` wrote: files and seconds per split, and the files it skipped."""

    root: str
    train_files: int
    valid_files: int
    train_seconds: float
    valid_seconds: float
    skipped: List[SkippedFile] = field(default_factory=list)

    def line(self) -> str:
        """One-line summary for the console."""
        return (
            f"manifest of {self.root}: train {self.train_files} files ({self.train_seconds / 3600:.2f} h), "
            f"valid {self.valid_files} files ({self.valid_seconds / 3600:.2f} h), "
            f"skipped {len(self.skipped)} files"
        )


@dataclass
class Manifest:
    """A parsed manifest: the audio root and one (relative path, frames) entry per audio file."""

    path: Path
    root: str
    entries: List[Tuple[str, int]]

    def __len__(self) -> int:
        return len(self.entries)


def write_manifest(
    root: PathLike,
    dest: PathLike,
    ext: str = "flac",
    valid_percent: float = 0.01,
    seed: int = 42,
    path_must_contain: Optional[str] = None,
    workers: Optional[int] = None,
    sample_rate: Optional[int] = SAMPLE_RATE,
) -> ManifestSummary:
    """Write `dest/train.tsv` (and `valid.tsv` when `valid_percent` > 0) as fairseq's manifest tool does.

    Unusable files (unreadable, empty, another sample rate than `sample_rate`) still take their
    random draw, so the other files land in the same split as with fairseq, but are left out and
    reported in the summary.
    """
    if not 0 <= valid_percent <= 1:
        raise W2v2Error(f"`valid_percent` must be between 0 and 1, but is {valid_percent} instead.")
    real_root = existing_dir(root, "the manifest root")
    out = writable_dir(dest)
    files = usable_audio(real_root, ext, path_must_contain, sample_rate, workers)
    train, valid = split_train_valid(files, valid_percent, seed)
    outputs = {out / "train.tsv": format_manifest(real_root, train)}
    if valid_percent > 0:
        outputs[out / "valid.tsv"] = format_manifest(real_root, valid)
    write_texts_atomically(outputs)
    return ManifestSummary(
        root=real_root,
        train_files=sum(f.problem is None for f in train),
        valid_files=sum(f.problem is None for f in valid),
        train_seconds=sum(f.seconds for f in train),
        valid_seconds=sum(f.seconds for f in valid),
        skipped=skipped_files(files),
    )


def usable_audio(
    root: str,
    ext: str,
    path_must_contain: Optional[str] = None,
    sample_rate: Optional[int] = SAMPLE_RATE,
    workers: Optional[int] = None,
) -> List[AudioFile]:
    """`find_audio`, but an error when nothing is found or when no file found is usable."""
    files = find_audio(root, ext, path_must_contain, sample_rate, workers)
    if not files:
        raise W2v2Error(f"no `*.{ext}` files were found under {root} (searched recursively); is the extension right?")
    if all(f.problem for f in files):
        examples = "; ".join(f"{f.path}: {f.problem}" for f in files[:3])
        raise W2v2Error(f"none of the {len(files)} `*.{ext}` files under {root} is usable, e.g. {examples}.")
    return files


def find_audio(
    root: str,
    ext: str,
    path_must_contain: Optional[str] = None,
    sample_rate: Optional[int] = SAMPLE_RATE,
    workers: Optional[int] = None,
) -> List[AudioFile]:
    """Probe every `root/**/*.ext` file, in the order of fairseq's recursive glob, with a thread pool.

    Files whose real path lacks `path_must_contain` are left out, as fairseq does before its draw.
    """
    # The root is escaped so that a directory name with `[` or `*` is not taken as a pattern.
    pattern = os.path.join(glob.escape(root), "**", "*." + ext.lstrip("."))
    paths = list(glob.iglob(pattern, recursive=True))
    # 28k files share a few hundred folders: resolve each folder once.
    real_dir = functools.lru_cache(maxsize=None)(os.path.realpath)
    probe = functools.partial(_probe, real_dir=real_dir, path_must_contain=path_must_contain, sample_rate=sample_rate)
    desc = f"reading {os.path.basename(root)}"
    with ThreadPoolExecutor(workers) as pool:
        found = list(tqdm(pool.map(probe, paths), total=len(paths), desc=desc, unit="file", leave=False))
    return [f for f in found if f is not None]


def _realpath(path: str, real_dir: Callable[[str], str]) -> str:
    """`os.path.realpath(path)`, with the folder resolved by `real_dir`."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    return os.path.join(real_dir(folder), name)


def _probe(
    path: str, real_dir: Callable[[str], str], path_must_contain: Optional[str], sample_rate: Optional[int]
) -> Optional[AudioFile]:
    """Read one file's header; None when its real path lacks `path_must_contain`."""
    real = _realpath(path, real_dir)
    if path_must_contain and path_must_contain not in real:
        return None
    try:
        with soundfile.SoundFile(path) as audio:
            frames, rate = audio.frames, audio.samplerate
    except (RuntimeError, OSError) as error:  # libsndfile's errors are RuntimeErrors
        if not os.path.exists(path):
            return AudioFile(path, problem="missing (a broken link, or deleted while reading)")
        if os.path.getsize(path) == 0:
            return AudioFile(real, problem="empty (0 bytes)")
        return AudioFile(real, problem=f"unreadable ({getattr(error, 'error_string', error)})")
    if frames == 0:
        return AudioFile(real, 0, rate, problem="empty (0 frames)")
    if sample_rate and rate != sample_rate:
        return AudioFile(real, frames, rate, problem=f"sample rate {rate} Hz instead of {sample_rate} Hz")
    return AudioFile(real, frames, rate, found=path)


def split_train_valid(
    files: Sequence[AudioFile], valid_percent: float, seed: int
) -> Tuple[List[AudioFile], List[AudioFile]]:
    """Draw `random.Random(seed).random()` per file in order: above `valid_percent` goes to train."""
    rand = random.Random(seed)
    train: List[AudioFile] = []
    valid: List[AudioFile] = []
    for audio in files:
        (train if rand.random() > valid_percent else valid).append(audio)
    return train, valid


def skipped_files(files: Sequence[AudioFile]) -> List[SkippedFile]:
    """The unusable files among `files`, with their reasons."""
    return [SkippedFile(f.path, f.problem) for f in files if f.problem]


def format_manifest(root: str, files: Sequence[AudioFile]) -> str:
    """Manifest text: `root`, then `relative path<TAB>frames` per usable file."""
    lines = [f"{_listed_path(f, root)}\t{f.frames}" for f in files if f.problem is None]
    return join_lines([root] + lines)


def _listed_path(audio: AudioFile, root: str) -> str:
    """The file's real path relative to `root`, as fairseq lists it; the path through the link instead
    when a link leads out of the root (`read_manifest` refuses paths that leave the root)."""
    relative = os.path.relpath(audio.path, root)
    return os.path.relpath(audio.found, root) if escapes_root(relative) and audio.found else relative


def escapes_root(relative: str) -> bool:
    """Whether a manifest path is absolute or climbs out of the root with `..` (read lexically)."""
    return os.path.isabs(relative) or os.path.normpath(relative).split(os.sep)[0] == os.pardir


def join_lines(lines: Iterable[str]) -> str:
    """Text of `lines`, each ending in a newline."""
    return "".join(line + "\n" for line in lines)


def read_manifest(path: PathLike) -> Manifest:
    """Parse a manifest, checking its root directory and every line."""
    path = Path(path)
    lines = read_lines(path, "manifest")
    if not lines or not lines[0].strip():
        raise W2v2Error(f"{path}, line 1: a manifest must start with its audio root directory, but it is empty.")
    root = lines[0].strip()
    if not os.path.isdir(root):
        raise W2v2Error(
            f"{path}, line 1: the audio root must be an existing directory, but {root} is not "
            "(was the manifest written on another machine?)."
        )
    entries = [_parse_entry(path, number, line) for number, line in enumerate(lines[1:], start=2)]
    return Manifest(path, root, entries)


def _parse_entry(path: Path, number: int, line: str) -> Tuple[str, int]:
    """One `relative/path<TAB>frames` line, split as fairseq's dataset splits it."""
    items = line.strip().split("\t")
    if len(items) != 2 or not items[0] or not (items[1].isascii() and items[1].isdigit()):
        raise W2v2Error(
            f"{path}, line {number}: a manifest line must be `relative/path<TAB>frames`, but is {line!r} instead."
        )
    if escapes_root(items[0]):
        raise W2v2Error(f"{path}, line {number}: the audio path {items[0]!r} must lie under the root directory of "
                        "line 1, but it is absolute or climbs out of it with `..`; list files relative to the root.")
    return items[0], int(items[1])


def read_lines(path: Path, what: str) -> List[str]:
    """The lines of a text file (without newlines), or an error naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise W2v2Error(f"cannot read {what} {path}: {reason}.") from error
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def existing_dir(path: PathLike, what: str) -> str:
    """The real path of an existing directory, or an error naming it."""
    if not os.path.isdir(path):
        raise W2v2Error(f"{what} must be an existing directory, but {path} is not.")
    return os.path.realpath(path)


def writable_dir(path: PathLike) -> Path:
    """Create the output directory `path` if needed; an error when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(
            f"the output directory must be writable, but {path} cannot be created: {error.strerror}."
        ) from error
    if not os.access(path, os.W_OK):
        raise W2v2Error(f"the output directory must be writable, but {path} is not.")
    return path
