"""Fuzzing the manifest, label and dictionary readers: any file either parses or raises W2v2Error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2v2.data.dictionary import Dictionary
from w2v2.data.labels import read_labels
from w2v2.data.manifest import escapes_root, read_manifest
from w2v2.errors import W2v2Error

EXAMPLES = int(os.environ.get("W2V2_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Characters that matter to the parsers, mixed with any text.
PIECES = st.sampled_from(["\t", "\n", "\r", " ", "..", "/", "\\", "0", "17", "-3", "1e5", "#", "<unk>", "\x00", "\ufeff"])
# `name<TAB>17` (a manifest line) or `name 17` (a dictionary line), so that many files parse.
WELL_FORMED = st.tuples(st.text(min_size=1, max_size=5), st.sampled_from(["\t", " "]), st.integers(0, 99999)).map(
    lambda parts: f"{parts[0]}{parts[1]}{parts[2]}")
LINE = WELL_FORMED | st.lists(PIECES | st.text(max_size=6), max_size=8).map("".join)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "audio").mkdir()
    return root


def file_text(root: Path):
    """Text of a file: lines built from tricky pieces, often after a real directory as line 1, or raw bytes."""
    first = st.sampled_from([str(root / "audio"), "", "/no/such/dir", str(root / "audio") + "\t3"]) | LINE
    text = st.tuples(first, st.lists(LINE, max_size=6)).map(lambda parts: "\n".join([parts[0], *parts[1]]))
    tidy = st.lists(WELL_FORMED, max_size=6).map(lambda lines: "\n".join([str(root / "audio"), *lines]) + "\n")
    return (text | tidy).map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=64)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@FUZZ
@given(data=st.data())
def test_manifest_parses_or_explains(folder: Path, data):
    path = write(folder / "fuzz.tsv", data.draw(file_text(folder)))
    try:
        manifest = read_manifest(path)
    except W2v2Error as error:
        assert str(path) in str(error)
        return
    assert os.path.isdir(manifest.root)
    for relative, frames in manifest.entries:
        assert relative and "\t" not in relative and frames >= 0 and not escapes_root(relative)


@FUZZ
@given(data=st.data(), expected=st.none() | st.integers(0, 8))
def test_labels_parse_or_explain(folder: Path, data, expected):
    path = write(folder / "fuzz.ltr", data.draw(file_text(folder)))
    try:
        lines = read_labels(path, expected_lines=expected)
    except W2v2Error as error:
        assert str(path) in str(error)
        return
    assert all(line.split() for line in lines) and (expected is None or len(lines) == expected)


@FUZZ
@given(data=st.data())
def test_dictionary_parses_or_explains(folder: Path, data):
    tidy = st.lists(st.tuples(st.text(min_size=1, max_size=3), st.integers(0, 999)), max_size=6).map(
        lambda pairs: "".join(f"{symbol} {count}\n" for symbol, count in pairs).encode())
    path = write(folder / "dict.ltr.txt", data.draw(file_text(folder) | tidy))
    try:
        dictionary = Dictionary.load(path)
    except W2v2Error as error:
        assert str(path) in str(error)
        return
    assert len(dictionary) > dictionary.nspecial
    assert all(dictionary.index(symbol) == index for index, symbol in enumerate(dictionary.symbols))
