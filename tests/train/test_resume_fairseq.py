"""Resuming training from checkpoints that fairseq itself wrote mid-training (`checkpoint.restore_file`)."""

from __future__ import annotations

import shutil

import pytest
import torch

from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train import loop
from w2v2.train.config_loading import load_train_config
from tests.corpus import FIXTURE_CONFIGS

RUNS = FIXTURE_CONFIGS.parent / "training_run"


def adam_steps(state: dict) -> int:
    return max(int(moments["step"]) for moments in state["last_optimizer_state"]["state"].values())


@pytest.mark.parametrize("config, name", [("tiny_pretrain", "pretrain_run_last.pt"), ("tiny_ctc", "ctc_run_last.pt")])
def test_fairseq_checkpoint_resumes_where_fairseq_stopped(tiny_manifest, tmp_path, config, name):
    fairseq = load_checkpoint_file(RUNS / name)
    data = tmp_path / "manifest"
    shutil.copytree(tiny_manifest, data)
    if "target_dictionary" in fairseq["task_state"]:  # the run's own letters, so the output layer fits
        fairseq["task_state"]["target_dictionary"].save(data / "dict.ltr.txt")
    done = fairseq["optimizer_history"][-1]["num_updates"]
    overrides = [f"task.data={data}", f"checkpoint.restore_file={RUNS / name}", f"optimization.max_update={done + 3}",
                 "dataset.num_workers=0", f"model.w2v_path={RUNS / 'pretrain_run_last.pt'}"]
    if config == "tiny_pretrain":
        overrides.pop()  # no model.w2v_path
    cfg = load_train_config(str(FIXTURE_CONFIGS), config, overrides).cfg
    summary = loop.train(cfg, tmp_path / "run")

    assert summary.num_updates == done + 3
    assert summary.best == fairseq["extra_state"]["best"]  # fairseq's best validation metric carries over
    saved = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt")
    assert saved["optimizer_history"][-1]["num_updates"] == done + 3
    assert adam_steps(saved) == adam_steps(fairseq) + 3  # fairseq's Adam moments were continued, not reset
    assert saved["extra_state"]["train_iterator"]["epoch"] >= fairseq["extra_state"]["train_iterator"]["epoch"]
    changed = [k for k, v in fairseq["model"].items() if not torch.equal(v, saved["model"][k])]
    assert "w2v_encoder.proj.weight" in changed if config == "tiny_ctc" else "final_proj.weight" in changed
    assert list(saved["model"]) == list(fairseq["model"])
