"""Shared test fixtures: fairseq's reference files, copied from ../shared/fixtures/fairseq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.corpus import write_corpus

FAIRSEQ = Path(__file__).parent / "fixtures" / "fairseq"


@pytest.fixture(scope="session")
def fairseq_dir() -> Path:
    return FAIRSEQ


@pytest.fixture(scope="session")
def pretrain_outputs() -> dict:
    return torch.load(FAIRSEQ / "pretrain_outputs.pt", weights_only=True)


@pytest.fixture(scope="session")
def ctc_outputs() -> dict:
    return torch.load(FAIRSEQ / "ctc_outputs.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """Manifests of a 32-utterance noise corpus (see tests/corpus.py)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))
