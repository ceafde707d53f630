"""fairseq's label files: `.wrd` (words) and `.ltr` (letters, `|` between words), one line per audio file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from w2v2.data.dictionary import Dictionary, dictionary_from_lines
from w2v2.data.manifest import PathLike, join_lines, read_lines, read_manifest, writable_dir
from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically

# A chapter's transcripts: utterance id -> (words, line number in its trans.txt).
Chapter = Tuple[Path, Dict[str, Tuple[str, int]]]


@dataclass
class LabelsSummary:
    """What `write_labels` wrote."""

    lines: int
    words: int
    wrd_path: Path
    ltr_path: Path

    def line(self) -> str:
        """One-line summary for the console."""
        return f"wrote {self.lines} lines ({self.words} words) to {self.wrd_path} and {self.ltr_path}"


@dataclass
class DictionarySummary:
    """What `write_dictionary` wrote."""

    path: Path
    symbols: int
    tokens: int

    def line(self) -> str:
        """One-line summary for the console."""
        return f"wrote {self.symbols} symbols ({self.tokens} tokens counted) to {self.path}"


def letters(words: str) -> str:
    """The `.ltr` line of a transcript: `TO HE` -> `T O | H E |`."""
    return " ".join(words.replace(" ", "|")) + " |"


def write_labels(tsv: PathLike, output_dir: PathLike, output_name: str) -> LabelsSummary:
    """Write `output_dir/output_name.{wrd,ltr}` for the manifest `tsv`, as fairseq's `libri_labels.py` does."""
    manifest = read_manifest(tsv)
    out = writable_dir(output_dir)
    words = transcripts(manifest.root, [relpath for relpath, _ in manifest.entries], manifest.path)
    wrd_path, ltr_path = out / f"{output_name}.wrd", out / f"{output_name}.ltr"
    write_texts_atomically({wrd_path: join_lines(words), ltr_path: join_lines(letters(w) for w in words)})
    return LabelsSummary(len(words), sum(len(w.split()) for w in words), wrd_path, ltr_path)


def transcripts(root: str, relpaths: Sequence[str], manifest: Optional[Path] = None) -> List[str]:
    """The words of each audio file, from the `SPEAKER-CHAPTER.trans.txt` beside it.

    Errors name line `i + 2` of `manifest` for `relpaths[i]` when given, else the audio file.
    """
    chapters: Dict[str, Chapter] = {}
    words = []
    for index, relpath in enumerate(relpaths):
        where = f"{manifest}, line {index + 2}" if manifest else os.path.join(root, relpath)
        folder = os.path.dirname(relpath)
        if folder not in chapters:
            chapters[folder] = _read_chapter(root, folder, where)
        words.append(_transcript(chapters[folder], os.path.basename(relpath).split(".")[0], where))
    return words


def _read_chapter(root: str, folder: str, where: str) -> Chapter:
    """Read `root/folder/SPEAKER-CHAPTER.trans.txt`, named after the last two folders of the path."""
    parts = folder.split(os.sep)
    if len(parts) < 2 or not all(parts[-2:]):
        raise W2v2Error(
            f"{where}: audio files must lie in SPEAKER/CHAPTER folders as in LibriSpeech, "
            f"but the folder is {folder or 'the root itself'} instead."
        )
    path = Path(root, folder, f"{parts[-2]}-{parts[-1]}.trans.txt")
    if not path.is_file():
        raise W2v2Error(f"{where}: the transcript file {path} does not exist.")
    texts = {}
    for number, line in enumerate(read_lines(path, "transcript file"), start=1):
        items = line.split()
        if items:
            texts[items[0]] = (" ".join(items[1:]), number)
    return path, texts


def _transcript(chapter: Chapter, utterance: str, where: str) -> str:
    """The words of `utterance`; an error when it has no line in the chapter's file or an empty one."""
    path, texts = chapter
    if utterance not in texts:
        raise W2v2Error(f"{where}: utterance {utterance} has no line in {path}.")
    words, number = texts[utterance]
    if not words:
        raise W2v2Error(f"{path}, line {number}: the transcript of {utterance} must not be empty, but it is.")
    return words


def read_labels(path: PathLike, expected_lines: Optional[int] = None, manifest: Optional[PathLike] = None) -> List[str]:
    """The lines of a label file; an error when it has not `expected_lines` (the manifest's entries)."""
    path = Path(path)
    lines = read_lines(path, "label file")
    empty = [number for number, line in enumerate(lines, start=1) if not line.split()]
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (" …" if len(empty) > 5 else "")
        raise W2v2Error(f"{path}, line{'s' if len(empty) > 1 else ''} {shown}: a label line must hold the "
                        f"transcript of its audio file, but {len(empty)} line{'s are' if len(empty) > 1 else ' is'} "
                        "empty; remove those files from the manifest and their lines from the labels.")
    if expected_lines is not None and len(lines) != expected_lines:
        source = f"the manifest {manifest}" if manifest else "the manifest"
        raise W2v2Error(
            f"{path} must have one line per audio file of {source}, {expected_lines} lines, "
            f"but has {len(lines)} instead."
        )
    return lines


def write_dictionary(label_files: Sequence[PathLike], dest: PathLike, name: str = "dict.ltr.txt") -> DictionarySummary:
    """Count the symbols of `label_files` into `dest/name`: most frequent first, ties alphabetical."""
    if not label_files:
        raise W2v2Error("at least one label file is needed to build a dictionary, but none was given.")
    lines = [line for label_file in label_files for line in read_lines(Path(label_file), "label file")]
    dictionary = dictionary_from_lines(lines)
    if len(dictionary) == dictionary.nspecial:
        raise W2v2Error(f"the label files {', '.join(map(str, label_files))} must hold symbols, but are empty.")
    path = writable_dir(dest) / name
    save_dictionary(dictionary, path)
    counts = dictionary.count[dictionary.nspecial :]
    return DictionarySummary(path, len(counts), sum(counts))


def save_dictionary(dictionary: Dictionary, path: Path) -> None:
    """`Dictionary.save`, with a failure reported as a user error."""
    try:
        dictionary.save(path)
    except OSError as error:
        raise W2v2Error(f"cannot write {path}: {error.strerror}.") from error
