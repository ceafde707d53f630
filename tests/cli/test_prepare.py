"""`w2v2 prepare ...` through the command line entry point: files written, summaries, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from w2v2.cli.main import main
from w2v2.data.manifest import read_manifest

pytest_plugins = ["tests.data.conftest"]


def test_manifest(librispeech: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dev = librispeech / "dev-clean" / "84" / "121123"
    (dev / "broken.flac").write_bytes(b"junk")
    status = main(["prepare", "manifest", str(librispeech), "--dest", str(tmp_path), "--valid-percent", "0.5"])
    out = capsys.readouterr().out
    assert status == 0
    assert (tmp_path / "train.tsv").exists() and (tmp_path / "valid.tsv").exists()
    assert f"skipped {dev / 'broken.flac'}: unreadable" in out
    assert "skipped 1 files" in out.splitlines()[-1]


def test_manifest_options(librispeech: Path, tmp_path: Path) -> None:
    args = ["--valid-percent", "0", "--ext", "flac", "--seed", "3", "--path-must-contain", "test-other"]
    assert main(["prepare", "manifest", str(librispeech), "--dest", str(tmp_path), *args, "--workers", "2"]) == 0
    assert [relpath for relpath, _ in read_manifest(tmp_path / "train.tsv").entries] == [
        "test-other/1688/142285/1688-142285-0000.flac"
    ]
    assert not (tmp_path / "valid.tsv").exists()


def test_labels_and_dict(librispeech: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["prepare", "manifest", str(librispeech / "dev-clean"), "--dest", str(tmp_path), "--valid-percent", "0"])
    labels = ["prepare", "labels", str(tmp_path / "train.tsv"), "--output-dir", str(tmp_path), "--output-name", "dev"]
    assert main(labels) == 0
    assert sorted((tmp_path / "dev.wrd").read_text().splitlines()) == ["GO DO IT", "WE'LL SEE"]
    assert main(["prepare", "dict", str(tmp_path / "dev.ltr"), "--dest", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "dict.ltr.txt").read_text().splitlines()[:2] == ["| 5", "E 3"]
    assert "wrote 2 lines (5 words)" in capsys.readouterr().out


def test_librispeech(librispeech: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["prepare", "librispeech", "--data-path", str(librispeech)]) == 0
    assert (librispeech / "manifest" / "dict.ltr.txt").exists()
    assert "wrote train 7 utt" in capsys.readouterr().out


def test_user_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["prepare", "librispeech", "--data-path", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("w2v2 prepare: error: the LibriSpeech directory must be an existing")


def test_sub_command_required(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["prepare"])
    assert "manifest,labels,dict,librispeech" in capsys.readouterr().err
