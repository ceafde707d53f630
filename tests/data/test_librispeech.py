"""`prepare_librispeech`: the files of fairseq's recipe for every split present, in one step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from w2v2.data.labels import write_dictionary, write_labels
from w2v2.data.librispeech import decoded_copy, plan_subsets, prepare_librispeech
from w2v2.data.manifest import read_manifest, write_manifest
from w2v2.errors import W2v2Error


def names(folder: Path) -> list:
    return sorted(path.name for path in folder.iterdir())


def test_writes_every_subset(librispeech: Path) -> None:
    summary = prepare_librispeech(librispeech)
    dest = librispeech / "manifest"
    subsets = ["dev_clean", "test_other", "train", "valid"]
    assert names(dest) == sorted(["dict.ltr.txt"] + [f"{s}.{e}" for s in subsets for e in ("ltr", "tsv", "wrd")])
    assert [(s.name, s.splits, s.utterances) for s in summary.subsets] == [
        ("train", ["train-clean-100"], 7),
        ("valid", ["dev-clean"], 2),
        ("dev_clean", ["dev-clean"], 2),
        ("test_other", ["test-other"], 1),
    ]
    assert summary.ext == "flac" and summary.symbols == 26 and summary.skipped == []
    assert summary.subsets[0].seconds == pytest.approx(sum(800 + 37 * i for i in range(7)) / 16000)
    assert "train 7 utt" in summary.line() and "skipped 0 files" in summary.line()


def test_same_bytes_as_the_step_by_step_tools(librispeech: Path, tmp_path: Path) -> None:
    prepare_librispeech(librispeech, tmp_path / "all")
    for split, name in [("train-clean-100", "train"), ("dev-clean", "valid"), ("test-other", "test_other")]:
        write_manifest(librispeech / split, tmp_path / name, valid_percent=0)
        write_labels(tmp_path / name / "train.tsv", tmp_path / name, "train")
        for ext in ("tsv", "wrd", "ltr"):
            assert (tmp_path / "all" / f"{name}.{ext}").read_bytes() == (tmp_path / name / f"train.{ext}").read_bytes()
    assert (tmp_path / "all" / "valid.tsv").read_bytes() == (tmp_path / "all" / "dev_clean.tsv").read_bytes()
    write_dictionary([tmp_path / "train" / "train.ltr"], tmp_path / "train")
    assert (tmp_path / "all" / "dict.ltr.txt").read_bytes() == (tmp_path / "train" / "dict.ltr.txt").read_bytes()


def test_detects_another_audio_format(tmp_path: Path, tree_builder) -> None:
    data = tree_builder(tmp_path / "data", ext="wav")
    summary = prepare_librispeech(data, tmp_path / "out")
    assert summary.ext == "wav"
    assert read_manifest(tmp_path / "out" / "train.tsv").entries[0][0].endswith(".wav")


def test_several_train_splits_without_train_clean_100(librispeech: Path, tmp_path: Path) -> None:
    (librispeech / "train-clean-100").rename(librispeech / "train-clean-360")
    (librispeech / "test-other").rename(librispeech / "train-other-500")
    summary = prepare_librispeech(librispeech, tmp_path)
    assert [(s.name, s.utterances) for s in summary.subsets][:1] == [("train", 8)]
    train = read_manifest(tmp_path / "train.tsv")
    assert train.root == os.path.realpath(librispeech)
    assert {relpath.split("/")[0] for relpath, _ in train.entries} == {"train-clean-360", "train-other-500"}
    assert len((tmp_path / "train.ltr").read_text().splitlines()) == 8
    assert {"train_clean_360.tsv", "train_other_500.tsv"} <= set(names(tmp_path))


def test_plan_subsets() -> None:
    assert plan_subsets(["dev-other", "test-clean", "train-clean-100", "train-clean-360"]) == {
        "train": ["train-clean-100"],
        "valid": ["dev-other"],
        "dev_other": ["dev-other"],
        "test_clean": ["test-clean"],
        "train_clean_360": ["train-clean-360"],
    }


def test_skipped_files_are_reported(librispeech: Path, audio_writer) -> None:
    dev = librispeech / "dev-clean" / "84" / "121123"
    audio_writer(dev / "84-121123-0002.flac", 900, sample_rate=22050)
    summary = prepare_librispeech(librispeech)
    assert [(os.path.basename(s.path), s.reason) for s in summary.skipped] == [
        ("84-121123-0002.flac", "sample rate 22050 Hz instead of 16000 Hz")
    ]
    assert summary.subsets[1].utterances == 2


def test_missing_utterance_writes_nothing(librispeech: Path) -> None:
    trans = librispeech / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    trans.write_text("84-121123-0000 GO DO IT\n")
    with pytest.raises(W2v2Error, match=f"84-121123-0001.flac: utterance 84-121123-0001 has no line in {trans}"):
        prepare_librispeech(librispeech)
    assert names(librispeech / "manifest") == []


def test_no_train_split(librispeech: Path) -> None:
    (librispeech / "train-clean-100").rename(librispeech / "other")
    with pytest.raises(W2v2Error, match="must hold a train split .* but .* holds dev-clean, test-other instead"):
        prepare_librispeech(librispeech)


def test_split_without_audio(librispeech: Path) -> None:
    (librispeech / "test-clean").mkdir()
    with pytest.raises(W2v2Error, match=r"no `\*.flac` files were found under .*test-clean"):
        prepare_librispeech(librispeech)


def test_no_audio_at_all(tmp_path: Path) -> None:
    (tmp_path / "train-clean-100" / "1" / "2").mkdir(parents=True)
    with pytest.raises(W2v2Error, match=r"must hold audio files \(\*.flac, \*.wav, \*.ogg, \*.opus\), but hold none"):
        prepare_librispeech(tmp_path)


def test_missing_data_path(tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match="the LibriSpeech directory must be an existing directory"):
        prepare_librispeech(tmp_path / "LibriSpeech")


def test_unwritable_dest(librispeech: Path) -> None:
    (librispeech / "manifest").write_text("")
    with pytest.raises(W2v2Error, match="output directory must be writable, but .*manifest cannot be created"):
        prepare_librispeech(librispeech)


def test_decoded_copy_holds_the_same_corpus_as_wav(tmp_path: Path, tree_builder) -> None:
    import soundfile

    data = tree_builder(tmp_path / "ogg", ext="ogg")
    copy = decoded_copy(data, tmp_path / "wav")
    sources = sorted(data.rglob("*.ogg"))
    assert sources and sorted(p.relative_to(copy) for p in copy.rglob("*.wav")) == [
        p.relative_to(data).with_suffix(".wav") for p in sources]
    for source in sources:
        wav = copy / source.relative_to(data).with_suffix(".wav")
        assert (soundfile.read(wav, dtype="int16")[0] == soundfile.read(source, dtype="int16")[0]).all()
    texts = sorted(p.relative_to(data) for p in data.rglob("*.txt"))
    assert texts and texts == sorted(p.relative_to(copy) for p in copy.rglob("*.txt"))
    summary = prepare_librispeech(copy, dest=tmp_path / "manifest")
    assert summary.ext == "wav" and [s.utterances for s in summary.subsets] == [
        s.utterances for s in prepare_librispeech(data, dest=tmp_path / "from_ogg").subsets]
    # a second call keeps what is there and redoes what is not whole
    kept, cut = (copy / source.relative_to(data).with_suffix(".wav") for source in sources[:2])
    before = kept.stat().st_mtime_ns
    cut.write_bytes(cut.read_bytes()[:100])
    decoded_copy(data, tmp_path / "wav")
    assert kept.stat().st_mtime_ns == before and soundfile.info(cut).frames == soundfile.info(sources[1]).frames
