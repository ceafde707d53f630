"""Manifests: byte-identical to fairseq's `wav2vec_manifest.py`, unusable audio skipped, bad files rejected."""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path
from typing import Callable, Optional, Tuple

import pytest
import soundfile

from w2v2.data.manifest import read_manifest, write_manifest
from w2v2.errors import W2v2Error


def reference_manifest(
    root: Path,
    ext: str = "flac",
    valid_percent: float = 0.01,
    seed: int = 42,
    path_must_contain: Optional[str] = None,
    keep: Callable[[str], bool] = lambda path: True,
) -> Tuple[str, Optional[str]]:
    """fairseq's tool as FACTS §1 describes it; lines of files failing `keep` are dropped after their draw."""
    dir_path = os.path.realpath(root)
    rand = random.Random(seed)
    train, valid = [dir_path], [dir_path]
    for name in glob.iglob(os.path.join(dir_path, "**/*." + ext), recursive=True):
        real = os.path.realpath(name)
        if path_must_contain and path_must_contain not in real:
            continue
        chosen = train if rand.random() > valid_percent else valid
        if keep(real):
            chosen.append(f"{os.path.relpath(real, dir_path)}\t{soundfile.info(name).frames}")
    return "".join(line + "\n" for line in train), "".join(line + "\n" for line in valid)


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("valid_percent, seed", [(0.01, 42), (0.5, 42), (0.5, 7), (0.0, 42), (1.0, 42)])
def test_matches_fairseq_tool(librispeech: Path, tmp_path: Path, valid_percent: float, seed: int) -> None:
    summary = write_manifest(librispeech, tmp_path / "out", valid_percent=valid_percent, seed=seed)
    train, valid = reference_manifest(librispeech, valid_percent=valid_percent, seed=seed)
    assert read(tmp_path / "out" / "train.tsv") == train
    assert (tmp_path / "out" / "valid.tsv").exists() == (valid_percent > 0)
    if valid_percent > 0:
        assert read(tmp_path / "out" / "valid.tsv") == valid
    assert summary.train_files + summary.valid_files == 10
    assert summary.train_files == train.count("\n") - 1
    assert summary.skipped == []


def test_two_files_by_hand(tmp_path: Path, audio_writer) -> None:
    # The root's own files come before its sub-folders' in a recursive glob; Random(42) draws 0.639, 0.025.
    audio_writer(tmp_path / "corpus" / "x.flac", 1000)
    audio_writer(tmp_path / "corpus" / "sub" / "y.flac", 1600)
    summary = write_manifest(tmp_path / "corpus", tmp_path / "out", valid_percent=0.1)
    root = os.path.realpath(tmp_path / "corpus")
    assert read(tmp_path / "out" / "train.tsv") == f"{root}\nx.flac\t1000\n"
    assert read(tmp_path / "out" / "valid.tsv") == f"{root}\nsub/y.flac\t1600\n"
    assert (summary.train_files, summary.valid_files) == (1, 1)
    assert summary.train_seconds == pytest.approx(1000 / 16000)


def test_links_out_of_the_root_are_listed_through_the_link(tmp_path: Path, audio_writer) -> None:
    # fairseq lists the real path, `../elsewhere/y.flac`, which read_manifest refuses as leaving the root.
    audio_writer(tmp_path / "corpus" / "x.flac", 1000)
    audio_writer(tmp_path / "elsewhere" / "y.flac", 1600)
    (tmp_path / "corpus" / "y.flac").symlink_to(tmp_path / "elsewhere" / "y.flac")
    write_manifest(tmp_path / "corpus", tmp_path / "out", valid_percent=0)
    manifest = read_manifest(tmp_path / "out" / "train.tsv")
    assert sorted(manifest.entries) == [("x.flac", 1000), ("y.flac", 1600)]


@pytest.mark.parametrize("path", ["../x.flac", "a/../../x.flac", "/etc/x.flac"])
def test_read_manifest_refuses_paths_out_of_the_root(tmp_path: Path, path: str) -> None:
    (tmp_path / "train.tsv").write_text(f"{tmp_path}\nok/a.flac\t5\n{path}\t10\n")
    with pytest.raises(W2v2Error, match=r"train.tsv, line 3: the audio path .* must lie under the root"):
        read_manifest(tmp_path / "train.tsv")


def test_path_must_contain_filters_before_the_draw(librispeech: Path, tmp_path: Path) -> None:
    write_manifest(librispeech, tmp_path, valid_percent=0.3, path_must_contain="train-clean")
    train, valid = reference_manifest(librispeech, valid_percent=0.3, path_must_contain="train-clean")
    assert (read(tmp_path / "train.tsv"), read(tmp_path / "valid.tsv")) == (train, valid)
    assert "dev-clean" not in train + valid


def test_root_line_is_the_real_path(librispeech: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(librispeech / "dev-clean")
    write_manifest(link, tmp_path / "out", valid_percent=0)
    lines = read(tmp_path / "out" / "train.tsv").splitlines()
    assert lines[0] == os.path.realpath(librispeech / "dev-clean")
    assert sorted(lines[1:]) == ["84/121123/84-121123-0000.flac\t1059", "84/121123/84-121123-0001.flac\t1096"]


def test_same_output_with_one_worker(librispeech: Path, tmp_path: Path) -> None:
    write_manifest(librispeech, tmp_path / "a", valid_percent=0.5, workers=1)
    write_manifest(librispeech, tmp_path / "b", valid_percent=0.5, workers=8)
    assert read(tmp_path / "a" / "train.tsv") == read(tmp_path / "b" / "train.tsv")


def test_unusable_files_are_skipped_after_their_draw(librispeech: Path, tmp_path: Path, audio_writer) -> None:
    dev = librispeech / "dev-clean" / "84" / "121123"
    (dev / "corrupt.flac").write_bytes(b"not audio at all")
    (dev / "blank.flac").write_bytes(b"")
    audio_writer(dev / "slow.flac", 900, sample_rate=8000)
    (dev / "gone.flac").symlink_to(dev / "deleted.flac")
    bad = {
        "corrupt.flac": "unreadable",
        "blank.flac": "empty (0 bytes)",
        "slow.flac": "sample rate 8000 Hz instead of 16000 Hz",
        "gone.flac": "missing",
    }
    summary = write_manifest(librispeech, tmp_path, valid_percent=0.5)
    reasons = {os.path.basename(s.path): s.reason for s in summary.skipped}
    assert sorted(reasons) == sorted(bad)
    assert all(reasons[name].startswith(start) for name, start in bad.items())
    dropped = {*bad, "deleted.flac"}  # the reference sees the broken link by its real path
    expected = reference_manifest(
        librispeech, valid_percent=0.5, keep=lambda path: os.path.basename(path) not in dropped
    )
    assert (read(tmp_path / "train.tsv"), read(tmp_path / "valid.tsv")) == expected


def test_zero_length_audio_is_skipped(tmp_path: Path, audio_writer) -> None:
    audio_writer(tmp_path / "corpus" / "a.wav", 0)  # libsndfile cannot open a flac without frames at all
    audio_writer(tmp_path / "corpus" / "b.wav", 500)
    summary = write_manifest(tmp_path / "corpus", tmp_path / "out", ext="wav", valid_percent=0)
    assert [(os.path.basename(s.path), s.reason) for s in summary.skipped] == [("a.wav", "empty (0 frames)")]
    assert read(tmp_path / "out" / "train.tsv").endswith("\nb.wav\t500\n")


def test_any_sample_rate_when_asked(tmp_path: Path, audio_writer) -> None:
    audio_writer(tmp_path / "corpus" / "a.flac", 800, sample_rate=8000)
    summary = write_manifest(tmp_path / "corpus", tmp_path / "out", valid_percent=0, sample_rate=None)
    assert summary.train_files == 1 and summary.train_seconds == pytest.approx(0.1)


@pytest.mark.parametrize("valid_percent", [-0.1, 1.5])
def test_valid_percent_out_of_range(librispeech: Path, tmp_path: Path, valid_percent: float) -> None:
    with pytest.raises(W2v2Error, match="`valid_percent` must be between 0 and 1, but is"):
        write_manifest(librispeech, tmp_path, valid_percent=valid_percent)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match=f"{tmp_path / 'nowhere'} is not"):
        write_manifest(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_files_with_the_extension(librispeech: Path, tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match=r"no `\*.wav` files were found under .*LibriSpeech"):
        write_manifest(librispeech, tmp_path, ext="wav")
    assert not (tmp_path / "train.tsv").exists()


def test_no_usable_file(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.flac").write_bytes(b"garbage")
    with pytest.raises(W2v2Error, match=r"none of the 1 `\*.flac` files .* is usable, e.g. .*a.flac: unreadable"):
        write_manifest(tmp_path / "corpus", tmp_path / "out")
    assert not (tmp_path / "out" / "train.tsv").exists()


def test_dest_that_cannot_be_created(librispeech: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(W2v2Error, match="the output directory must be writable, but .*file/out cannot be created"):
        write_manifest(librispeech, tmp_path / "file" / "out")


def test_failed_write_leaves_no_file(librispeech: Path, tmp_path: Path) -> None:
    (tmp_path / "valid.tsv").mkdir()  # a folder where valid.tsv goes: it cannot be replaced
    (tmp_path / "train.tsv").write_text("old\n")
    with pytest.raises(W2v2Error, match="cannot write .*valid.tsv"):
        write_manifest(librispeech, tmp_path, valid_percent=0.5)
    assert (tmp_path / "train.tsv").read_text() == "old\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_manifest_round_trip(librispeech: Path, tmp_path: Path) -> None:
    write_manifest(librispeech / "train-clean-100", tmp_path, valid_percent=0)
    manifest = read_manifest(tmp_path / "train.tsv")
    assert manifest.root == os.path.realpath(librispeech / "train-clean-100")
    assert len(manifest) == 7
    assert sorted(manifest.entries)[0] == ("19/198/19-198-0000.flac", 800)
    assert all((Path(manifest.root) / relpath).is_file() for relpath, _ in manifest.entries)


@pytest.mark.parametrize(
    "bad_line", ["a.flac 1000", "a.flac\t", "a.flac\tten", "a.flac\t100\textra", "\t100", "", "a.flac\t-5"]
)
def test_read_manifest_malformed_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "train.tsv"
    path.write_text(f"{tmp_path}\na.flac\t100\n{bad_line}\nb.flac\t200\n")
    with pytest.raises(W2v2Error, match=f"{path}, line 3: a manifest line must be"):
        read_manifest(path)


def test_read_manifest_missing_root(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("/no/such/root\na.flac\t100\n")
    with pytest.raises(W2v2Error, match=f"{path}, line 1: the audio root must be an existing directory, but /no/such"):
        read_manifest(path)


@pytest.mark.parametrize("text", ["", "\n"])
def test_read_manifest_empty(tmp_path: Path, text: str) -> None:
    (tmp_path / "train.tsv").write_text(text)
    with pytest.raises(W2v2Error, match="line 1: a manifest must start with its audio root"):
        read_manifest(tmp_path / "train.tsv")


def test_read_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(W2v2Error, match="cannot read manifest .*train.tsv: No such file"):
        read_manifest(tmp_path / "train.tsv")
