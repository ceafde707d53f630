"""Label files: byte-identical to fairseq's `libri_labels.py`; dictionaries by frequency; bad input rejected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import pytest

from w2v2.data.dictionary import Dictionary, dictionary_from_lines
from w2v2.data.labels import letters, read_labels, write_dictionary, write_labels
from w2v2.data.manifest import write_manifest
from w2v2.errors import W2v2Error


def reference_labels(tsv: Path) -> Tuple[str, str]:
    """fairseq's labels tool as FACTS §1 describes it: `.wrd` and `.ltr` text of a manifest."""
    lines = tsv.read_text().splitlines()
    root, wrd, ltr = lines[0], [], []
    for line in lines[1:]:
        relpath = line.split("\t")[0]
        speaker, chapter = os.path.dirname(relpath).split("/")[-2:]
        trans = Path(root, os.path.dirname(relpath), f"{speaker}-{chapter}.trans.txt")
        texts = {items[0]: " ".join(items[1:]) for items in map(str.split, trans.read_text().splitlines())}
        words = texts[os.path.basename(relpath).split(".")[0]]
        wrd.append(words + "\n")
        ltr.append(" ".join(words.replace(" ", "|")) + " |\n")
    return "".join(wrd), "".join(ltr)


@pytest.fixture
def train_tsv(librispeech: Path, tmp_path: Path) -> Path:
    write_manifest(librispeech / "train-clean-100", tmp_path / "manifest", valid_percent=0)
    return tmp_path / "manifest" / "train.tsv"


def test_matches_fairseq_tool(train_tsv: Path, tmp_path: Path) -> None:
    summary = write_labels(train_tsv, tmp_path / "labels", "train")
    wrd, ltr = reference_labels(train_tsv)
    assert (tmp_path / "labels" / "train.wrd").read_bytes().decode() == wrd
    assert (tmp_path / "labels" / "train.ltr").read_bytes().decode() == ltr
    assert (summary.lines, summary.words) == (7, 20)


def test_two_files_by_hand(tmp_path: Path, audio_writer) -> None:
    chapter = tmp_path / "corpus" / "19" / "198"
    audio_writer(chapter / "19-198-0000.flac", 500)
    audio_writer(chapter / "19-198-0001.flac", 600)
    (chapter / "19-198.trans.txt").write_text("19-198-0001 DON'T  GO\n19-198-0000 TO HE\n")
    (tmp_path / "train.tsv").write_text(
        f"{tmp_path / 'corpus'}\n19/198/19-198-0000.flac\t500\n19/198/19-198-0001.flac\t600\n"
    )
    write_labels(tmp_path / "train.tsv", tmp_path, "train")
    assert (tmp_path / "train.wrd").read_text() == "TO HE\nDON'T GO\n"
    assert (tmp_path / "train.ltr").read_text() == "T O | H E |\nD O N ' T | G O |\n"


def test_letters() -> None:
    assert letters("TO HE") == "T O | H E |"
    assert letters("A") == "A |"


def test_missing_transcript_file(train_tsv: Path, librispeech: Path, tmp_path: Path) -> None:
    trans = librispeech / "train-clean-100" / "19" / "227" / "19-227.trans.txt"
    trans.unlink()
    with pytest.raises(W2v2Error, match=rf"{train_tsv}, line \d: the transcript file {trans} does not exist"):
        write_labels(train_tsv, tmp_path / "labels", "train")
    assert not (tmp_path / "labels" / "train.ltr").exists()


def test_utterance_missing_from_transcripts(train_tsv: Path, librispeech: Path, tmp_path: Path) -> None:
    trans = librispeech / "train-clean-100" / "26" / "495" / "26-495.trans.txt"
    trans.write_text("26-495-0000 THE QUICK BROWN FOX\n26-495-0002 X Y Z\n")
    with pytest.raises(W2v2Error, match=rf"{train_tsv}, line \d: utterance 26-495-0001 has no line in {trans}"):
        write_labels(train_tsv, tmp_path / "labels", "train")
    assert not list((tmp_path / "labels").iterdir())


def test_empty_transcript(train_tsv: Path, librispeech: Path, tmp_path: Path) -> None:
    trans = librispeech / "train-clean-100" / "26" / "495" / "26-495.trans.txt"
    trans.write_text("26-495-0000 THE QUICK BROWN FOX\n26-495-0001  \n26-495-0002 X Y Z\n")
    with pytest.raises(W2v2Error, match=f"{trans}, line 2: the transcript of 26-495-0001 must not be empty"):
        write_labels(train_tsv, tmp_path, "train")


def test_audio_outside_speaker_chapter_folders(tmp_path: Path, audio_writer) -> None:
    audio_writer(tmp_path / "corpus" / "a.flac", 500)
    (tmp_path / "train.tsv").write_text(f"{tmp_path / 'corpus'}\na.flac\t500\n")
    with pytest.raises(W2v2Error, match="line 2: audio files must lie in SPEAKER/CHAPTER folders"):
        write_labels(tmp_path / "train.tsv", tmp_path, "train")


def test_unwritable_output_dir(train_tsv: Path, tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match="output directory must be writable"):
        write_labels(train_tsv, train_tsv / "labels", "train")


def test_read_labels(tmp_path: Path) -> None:
    (tmp_path / "train.ltr").write_text("T O |\nH E |\n")
    assert read_labels(tmp_path / "train.ltr", expected_lines=2) == ["T O |", "H E |"]


def test_read_labels_line_count_mismatch(tmp_path: Path) -> None:
    (tmp_path / "train.ltr").write_text("T O |\nH E |\n")
    pattern = rf"{tmp_path}/train.ltr must have one line per audio file of the manifest .*train.tsv, 3 lines, but has 2"
    with pytest.raises(W2v2Error, match=pattern):
        read_labels(tmp_path / "train.ltr", expected_lines=3, manifest=tmp_path / "train.tsv")


def test_read_labels_missing_file(tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match="cannot read label file .*train.ltr"):
        read_labels(tmp_path / "train.ltr")


def test_dictionary_by_frequency_then_alphabet() -> None:
    dictionary = dictionary_from_lines(["B A | C |", "A B | ' |", "Z |"])
    assert dictionary.symbols[4:] == ["|", "A", "B", "'", "C", "Z"]
    assert dictionary.count[4:] == [5, 2, 2, 1, 1, 1]


def test_text_for_people_leaves_out_every_special_symbol() -> None:
    dictionary = Dictionary(["|", "A", "<", "<mask>", "B"])
    ids = [dictionary.index(s) for s in ("<s>", "A", "<pad>", "A", "|", "<unk>", "<", "</s>", "<mask>", "B")]
    assert dictionary.string(ids) == "A <pad> A | <unk> < <mask> B"  # fairseq's: only <s> and </s> dropped
    assert dictionary.text(ids + [99]) == "A A | < B"  # "<" alone is a symbol, not a special one
    assert [i for i in range(len(dictionary)) if dictionary.is_special(i)] == [0, 1, 2, 3, 7]


def test_write_dictionary(tmp_path: Path) -> None:
    (tmp_path / "a.ltr").write_text("T O | H E |\n")
    (tmp_path / "b.ltr").write_text("H E |\n")
    summary = write_dictionary([tmp_path / "a.ltr", tmp_path / "b.ltr"], tmp_path / "out")
    assert (tmp_path / "out" / "dict.ltr.txt").read_text() == "| 3\nE 2\nH 2\nO 1\nT 1\n"
    assert (summary.symbols, summary.tokens) == (5, 9)
    assert Dictionary.load(summary.path).index("|") == 4


def test_write_dictionary_of_empty_files(tmp_path: Path) -> None:
    (tmp_path / "a.ltr").write_text("\n")
    with pytest.raises(W2v2Error, match="must hold symbols, but are empty"):
        write_dictionary([tmp_path / "a.ltr"], tmp_path)
    assert not (tmp_path / "dict.ltr.txt").exists()
