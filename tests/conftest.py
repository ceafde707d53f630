"""Shared test fixtures: fairseq's reference files, copied from ../shared/fixtures/fairseq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
