"""The README's first command in a reduced mode: `w2v2 demo --quick` runs every stage."""

from __future__ import annotations

import json
import math

import pytest

from w2v2.cli.main import main


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path, capsys):
    assert main(["demo", "--quick", "--workdir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert set(summary["seconds"]) == {"prepare", "pretrain", "finetune", "evaluate", "total"}
    assert not math.isnan(summary["greedy_wer"]) and not math.isnan(summary["untrained_wer"])
    assert summary["max_train_wps"] > 0
    assert (tmp_path / "finetune" / "checkpoints" / "checkpoint_best.pt").is_file()
    assert "dev WER (unseen voices)" in capsys.readouterr().out


def test_demo_refuses_a_missing_corpus(tmp_path, capsys):
    assert main(["demo", "--corpus", str(tmp_path / "nowhere"), "--workdir", str(tmp_path)]) == 2
    assert "`--corpus`" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_learns_and_the_lm_helps(tmp_path):
    """The README's `make demo` as it is (about 15 minutes on 2 cores): the fine-tuned model beats the
    untrained one on the unseen dev voices, and the 3-gram LM beats greedy decoding."""
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["greedy_wer"] < 0.5 * summary["untrained_wer"]
    assert summary["greedy_uer"] < 25.0
    if summary["lm_wer"] is not None:  # flashlight-text is in the test extra, so CI decodes with the LM
        assert summary["lm_wer"] < summary["greedy_wer"] and summary["lm_wer"] <= 30.0
