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
