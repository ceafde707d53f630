"""The README's first command in a reduced mode: `w2v2 demo --quick` runs every stage."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.corpus import FIXTURE_CONFIGS
from w2v2.cli.demo import _untrained_checkpoint
from w2v2.cli.hydra_train import main as hydra_train
from w2v2.cli.main import main
from w2v2.interop.checkpoints import load_model


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path, capsys):
    assert main(["demo", "--quick", "--workdir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert set(summary["seconds"]) == {"prepare", "pretrain", "finetune", "evaluate", "total"}
    assert not math.isnan(summary["greedy_wer"]) and not math.isnan(summary["untrained_wer"])
    assert summary["max_train_wps"] > 0
    assert (tmp_path / "finetune" / "checkpoints" / "checkpoint_best.pt").is_file()
    assert "dev WER (unseen voices)" in capsys.readouterr().out


def test_untrained_baseline_is_the_runs_own_start(fairseq_dir, tiny_manifest, tmp_path):
    """The baseline WER is that of the model fine-tuning started from, whatever random state training left."""
    run = tmp_path / "finetune"
    assert hydra_train(["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_ctc", f"task.data={tiny_manifest}",
                        f"model.w2v_path={fairseq_dir / 'pretrain_init.pt'}", f"hydra.run.dir={run}",
                        "optimization.max_update=4", "optimization.lr=[0.0]"]) == 0  # lr 0: weights stay at the start
    checkpoints = run / "checkpoints"
    (checkpoints / "checkpoint_last.pt").replace(checkpoints / "checkpoint_best.pt")
    start = load_model(checkpoints / "checkpoint_best.pt").state_dict()
    torch.manual_seed(12345)  # another random state than the trainer's
    rebuilt = load_model(_untrained_checkpoint(run, tmp_path / "untrained.pt")).state_dict()
    assert start.keys() == rebuilt.keys()
    assert all(torch.equal(start[k], rebuilt[k]) for k in start)


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
