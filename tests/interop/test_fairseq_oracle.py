"""What fairseq itself computed on checkpoints we wrote (tests/fixtures/ours, made by
tests/oracle/make_oracle_fixtures.sh with fairseq 0.12.2): our loader and model give the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.oracle.outputs import our_outputs, relative_error
from w2v2.cli.main import main

OURS = Path(__file__).parents[1] / "fixtures" / "ours"
REFERENCE = torch.load(OURS / "fairseq_outputs.pt", weights_only=True)
INFER = json.loads((OURS / "infer_valid.json").read_text())
SPECIAL = re.compile(r"<pad>|<unk>|<s>|</s>")


def test_fairseq_loaded_every_kind_of_checkpoint_we_write():
    kinds = {name: entry["kind"] for name, entry in REFERENCE["outputs"].items()}
    assert kinds == {"pretrain_last": "pretrain", "pretrain_interval": "pretrain", "saved_pretrain": "pretrain",
                     "ctc_best": "ctc", "ctc_resumed_last": "ctc", "ctc_fp16_last": "ctc",
                     "ctc_from_args_era_last": "ctc", "saved_ctc_bare": "ctc"}
    assert {p.stem for p in OURS.glob("*.pt")} == set(kinds) | {"fairseq_outputs"}


@pytest.mark.parametrize("name", sorted(REFERENCE["outputs"]))
def test_our_outputs_equal_fairseqs(name):
    expected = REFERENCE["outputs"][name]["value"]
    ours = our_outputs(OURS / f"{name}.pt", REFERENCE["source"], REFERENCE["padding_mask"])
    assert relative_error(ours, expected) <= 1e-5


def hypotheses(path: Path) -> dict:
    """`hypo.*` lines `TEXT (None-ID)` by id, special symbols dropped (shown text may leave them out)."""
    lines = (re.fullmatch(r"(.*) \((.*)\)", line).groups() for line in path.read_text().splitlines())
    return {key: SPECIAL.sub("", text).split() for text, key in lines}


def test_evaluate_gives_the_wer_and_hypotheses_of_fairseqs_infer_py(tiny_manifest, tmp_path):
    out = tmp_path / "results"
    assert main(["evaluate", "--checkpoint", str(OURS / INFER["checkpoint"]), "--data", str(tiny_manifest),
                 "--subset", INFER["subset"], "--max-tokens", str(INFER["max_tokens"]), "--device", "cpu",
                 "--results-path", str(out)]) == 0
    stem = f"{INFER['checkpoint']}-{INFER['subset']}"
    result = json.loads((out / f"result-{stem}.json").read_text())
    assert (result["word_errors"], result["words"]) == (INFER["word_errors"], INFER["words"])
    for kind, committed in (("units", INFER["hypo_units"]), ("word", INFER["hypo_words"])):
        expected = {key: SPECIAL.sub("", text).split() for key, text in committed.items()}
        assert hypotheses(out / f"hypo.{kind}-{stem}.txt") == expected
