"""Shared pieces of the inference tests: the tiny fairseq CTC model, its letters, a small LM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import w2v2
from w2v2.inference.ngram import write_lm_files

LM_SENTENCES = [s.split() for s in (
    "GO LEFT", "GO RIGHT", "TWO THREE ONE", "STOP", "GO LEFT TWO", "ONE ONE", "THREE GO", "LEFT STOP TWO",
)]


@pytest.fixture(scope="session")
def ctc_checkpoint(fairseq_dir) -> Path:
    return fairseq_dir / "ctc_init.pt"


@pytest.fixture(scope="session")
def ctc_model(ctc_checkpoint) -> w2v2.Wav2Vec2Ctc:
    return w2v2.load_model(ctc_checkpoint)


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory) -> tuple[Path, Path]:
    """(ARPA 3-gram, lexicon) of a few sentences over the words of tests/corpus.py and RIGHT."""
    folder = tmp_path_factory.mktemp("lm")
    write_lm_files(LM_SENTENCES, folder / "lm.arpa", folder / "lexicon.txt")
    return folder / "lm.arpa", folder / "lexicon.txt"


@pytest.fixture(scope="session")
def special_checkpoint(ctc_checkpoint, tmp_path_factory) -> Path:
    """The tiny CTC model with `<pad>` and `<unk>` made likelier, so that its greedy paths hold them."""
    model = w2v2.load_model(ctc_checkpoint)
    with torch.no_grad():
        model.w2v_encoder.proj.bias[[model.dictionary.pad(), model.dictionary.unk()]] += 2.0
    path = tmp_path_factory.mktemp("special") / "special.pt"
    w2v2.save_checkpoint(path, model, dictionary=model.dictionary)
    return path
