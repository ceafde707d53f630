from pathlib import Path

import pytest

from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write, write_text_atomically, write_texts_atomically


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("good\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left
    write_text_atomically(target, "new\n")
    assert target.read_text() == "new\n"


def test_binary_mode_and_error_names_the_file(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(W2v2Error, match=r"cannot write .*missing/x.txt"):
        write_text_atomically(tmp_path / "missing" / "x.txt", "x")


def test_several_files_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a\n")
    (tmp_path / "b.txt").mkdir()  # cannot be replaced by a file
    with pytest.raises(W2v2Error, match="b.txt"):
        write_texts_atomically({tmp_path / "a.txt": "new a\n", tmp_path / "b.txt": "new b\n"})
    assert (tmp_path / "a.txt").read_text() == "old a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
