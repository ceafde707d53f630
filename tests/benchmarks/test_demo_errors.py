"""benchmarks/demo_errors.py: the demo's word errors by kind, speaker and training frequency."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from benchmarks.demo_errors import breakdown, demo_kinds, frequency_bucket, main, speaker_of, word_hits


@pytest.fixture()
def ctc_checkpoint(fairseq_dir):
    """fairseq's tiny CTC model, whose letters are the tiny corpus's."""
    return fairseq_dir / "ctc_init.pt"


def test_frequency_buckets_have_closed_edges():
    assert [frequency_bucket(n) for n in (0, 1, 4, 5, 19, 20, 99, 100, 5000)] == [
        "0", "1-4", "1-4", "5-19", "5-19", "20-99", "20-99", "100+", "100+"]


def test_word_hits_mark_the_reference_words_the_hypothesis_matches():
    assert word_hits("AS MUCH AS I EVER WISH".split(), "AS MUCHAS A EVER WISH".split()) == [
        True, False, False, False, True, True]
    assert word_hits(["GO"], []) == [False]
    assert word_hits([], ["GO"]) == []


def test_demo_kinds_follow_the_corpus_generator():
    kind_of = demo_kinds()
    assert kind_of("THREE SEVEN NINE") == "digits"
    assert kind_of("ONE HUNDRED AND FIVE") == "number" and kind_of("EIGHTY THREE") == "number"
    assert kind_of("GO FORWARD TWO STEPS") == "command" and kind_of("DON'T MOVE") == "command"
    assert kind_of("PICK UP THE RED BALL") == "command"
    # a slot filled with a word its template does not take is no command
    assert kind_of("PICK UP THE LEFT BALL") == "book"
    assert kind_of("AND WHAT SORT OF YOUNG LADY IS SHE") == "book"


def test_breakdown_tallies_errors_by_kind_speaker_and_word_frequency():
    train = Counter({"GO": 150, "LEFT": 30, "TWO": 7, "STOP": 2})
    utterances = [("11", "GO LEFT", "GO LEFT"), ("11", "GO TWO STOP", "GO TOO"), ("12", "STOP", "STOP"),
                  ("12", "NEVER MIND", "NEVER")]
    tables = breakdown(utterances, train, lambda text: "short" if len(text.split()) == 1 else "long")
    assert {k: (t.utterances, t.words, t.errors) for k, t in tables["speaker"].items()} == {
        "11": (2, 5, 2), "12": (2, 3, 1)}
    assert {k: (t.utterances, t.words, t.errors) for k, t in tables["kind"].items()} == {
        "long": (3, 7, 3), "short": (1, 1, 0)}
    # NEVER and MIND were never seen; STOP was right once and wrong once; TWO was wrong
    assert {k: (t.words, t.errors) for k, t in tables["train_frequency"].items()} == {
        "0": (2, 1), "1-4": (2, 1), "5-19": (1, 1), "20-99": (1, 0), "100+": (2, 0)}
    assert list(tables["train_frequency"]) == ["0", "1-4", "5-19", "20-99", "100+"]
    assert tables["speaker"]["11"].wer == pytest.approx(40.0)


def test_speaker_comes_from_librispeech_names():
    assert speaker_of("2003/20031/2003-20031-0007.wav") == "2003"


def test_main_decodes_a_demo_folder_and_writes_the_tables(ctc_checkpoint, tiny_manifest, tmp_path, capsys):
    work = tmp_path / "demo"
    shutil.copytree(tiny_manifest, work / "manifest")
    output = tmp_path / "errors.json"
    assert main(["--workdir", str(work), "--checkpoint", str(ctc_checkpoint), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["subset"] == "dev_clean" and report["total"]["utterances"] == 8
    assert list(report["speaker"]) == ["201"]
    # every reference word lands in one frequency bucket, and the buckets' errors are at most the edit distance
    assert sum(t["words"] for t in report["train_frequency"].values()) == report["total"]["words"]
    assert sum(t["errors"] for t in report["train_frequency"].values()) <= report["total"]["errors"]
    assert sum(t["errors"] for t in report["kind"].values()) == report["total"]["errors"]
    assert "summary: WER" in capsys.readouterr().out


def test_main_names_a_missing_training_word_file(ctc_checkpoint, tmp_path, capsys):
    (tmp_path / "manifest").mkdir()
    assert main(["--workdir", str(tmp_path), "--checkpoint", str(ctc_checkpoint)]) == 1
    assert str(tmp_path / "manifest" / "train.wrd") in capsys.readouterr().err
