"""complete_cfg: fairseq's default groups filled into the configs we write; the table matches fairseq's files."""

from __future__ import annotations

import pytest

from w2v2.interop.fairseq_defaults import complete_cfg, fairseq_defaults
from w2v2.interop.safe_load import load_checkpoint_file


@pytest.mark.parametrize("name", ["pretrain_run_last.pt", "ctc_run_last.pt"])
def test_table_has_the_fields_fairseq_writes(fairseq_dir, name):
    cfg = load_checkpoint_file(fairseq_dir / "training_run" / name)["cfg"]
    table = fairseq_defaults()
    for root in (cfg, cfg["model"].get("w2v_args")):
        if root is None:
            continue
        for group, defaults in table["groups"].items():
            assert set(root[group]) == set(defaults), group
        for group, by_name in table["named_groups"].items():
            if root[group] is not None:
                assert set(root[group]) == set(by_name[root[group]["_name"]]), group
        assert all(root[group] is None for group in ("scoring", "bpe", "tokenizer"))


def test_own_values_win_and_missing_ones_take_fairseqs_defaults():
    cfg = complete_cfg({"common": {"fp16": True, "seed": 7},
                        "task": {"_name": "audio_finetuning", "data": "/d", "labels": "ltr",
                                 "eval_wer_config": None},
                        "optimization": {"lr": [0.1]}, "dataset": {"max_tokens": 1000}, "generation": None,
                        "model": {"_name": "wav2vec_ctc", "w2v_path": None,
                                  "w2v_args": {"model": {"_name": "wav2vec2"}}}})
    assert cfg["common"]["fp16"] is True and cfg["common"]["seed"] == 7 and cfg["common"]["log_interval"] == 100
    assert cfg["generation"]["print_alignment"] is None and cfg["generation"]["beam"] == 5
    assert cfg["task"]["eval_wer_config"]["print_alignment"] is None and cfg["task"]["labels"] == "ltr"
    # fairseq's `${...}` links take the value they point to
    assert cfg["distributed_training"]["fp16"] is True and cfg["task"]["seed"] == 7
    assert cfg["dataset"]["max_tokens_valid"] == 1000 and cfg["model"]["data"] == "/d"
    # a required string field never holds None
    assert cfg["model"]["w2v_path"] == ""
    inner = cfg["model"]["w2v_args"]
    assert inner["common"]["seed"] == 1 and inner["model"]["encoder_layers"] == 12 and inner["task"] is None
    assert cfg["scoring"] is None and cfg["_name"] is None


def test_unknown_named_group_and_extra_keys_stay_as_given():
    cfg = complete_cfg({"criterion": {"_name": "mine", "x": 1}, "common": {"not_fairseqs": 2}})
    assert cfg["criterion"] == {"_name": "mine", "x": 1}
    assert cfg["common"]["not_fairseqs"] == 2 and "log_interval" in cfg["common"]
