"""Checkpoints of every kind, freshly written by our code, hold every cfg path fairseq reads when it
loads a file (tests/fixtures/fairseq/cfg_reads.json, traced on fairseq's own files), its dataclass
groups as dicts, and none of the paths fairseq only looks up (which would change what it builds)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict

import pytest

import w2v2
from w2v2.data.dictionary import Dictionary
from w2v2.interop.checkpoints import save_checkpoint
from w2v2.interop.fairseq_defaults import fairseq_defaults
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.models.config import Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.train import loop
from w2v2.train.config import CommonConfig
from w2v2.train.config_loading import load_train_config
from tests.corpus import FIXTURE_CONFIGS

READS = json.loads((FIXTURE_CONFIGS.parent / "cfg_reads.json").read_text())["scenarios"]
SCENARIOS = {"wav2vec2": ("load_pretrain", "w2v_path"), "wav2vec_ctc": ("load_ctc", "infer")}
MICRO = ["model.encoder_embed_dim=16", "model.encoder_ffn_embed_dim=32", "model.encoder_attention_heads=2",
         "model.encoder_layers=1", "model.final_dim=8", "model.latent_vars=8", "model.conv_pos=8",
         "model.conv_pos_groups=2", "model.conv_feature_layers='[(16,10,5)]+[(16,3,2)]*4+[(16,2,2)]*2'"]
CTC = ["model.mask_channel_length=4", "dataset.validate_interval_updates=2", "checkpoint.save_interval_updates=2",
       "checkpoint.keep_interval_updates=-1"]


def run(name: str, manifest: Path, run_dir: Path, *overrides: str) -> Path:
    cfg = load_train_config(str(FIXTURE_CONFIGS), name, [f"task.data={manifest}", "dataset.num_workers=0",
                                                          *overrides]).cfg
    loop.train(cfg, run_dir)
    return run_dir / "checkpoints"


@pytest.fixture(scope="module")
def written(tiny_manifest, tmp_path_factory) -> Dict[str, Path]:
    """One file of every kind our code writes, by kind."""
    root = tmp_path_factory.mktemp("kinds")
    pt = run("tiny_pretrain", tiny_manifest, root / "pt", *MICRO, "optimization.max_update=4",
             "checkpoint.save_interval_updates=2", "checkpoint.keep_interval_updates=-1")
    ft = run("tiny_ctc", tiny_manifest, root / "ft", *CTC, f"model.w2v_path={pt / 'checkpoint_last.pt'}",
             "optimization.max_update=2")
    files = {"pretrain_last": pt / "checkpoint_last.pt", "pretrain_interval": pt / "checkpoint_1_2.pt",
             "pretrain_best": pt / "checkpoint_best.pt", "ctc_interval": ft / "checkpoint_1_2.pt",
             "ctc_best": root / "ctc_best.pt"}
    (ft / "checkpoint_best.pt").rename(files["ctc_best"])  # the resumed run below may write a new best
    run("tiny_ctc", tiny_manifest, root / "ft", *CTC, f"model.w2v_path={pt / 'checkpoint_last.pt'}",
        "optimization.max_update=4")
    files["ctc_resumed_last"] = ft / "checkpoint_last.pt"
    args_era = run("tiny_ctc", tiny_manifest, root / "args", "optimization.max_update=2",
                   f"model.w2v_path={FIXTURE_CONFIGS.parent / 'args_era_pretrain.pt'}")
    files["ctc_from_args_era"] = args_era / "checkpoint_last.pt"
    # the cfg of an fp16 run (training in fp16 needs a GPU): written by the same save path
    fp16 = load_train_config(str(FIXTURE_CONFIGS), "tiny_ctc", [f"task.data={tiny_manifest}", "common.fp16=true",
                                                                "model.w2v_path=x.pt"]).cfg
    files["ctc_fp16"] = root / "fp16.pt"
    save_checkpoint(files["ctc_fp16"], w2v2.load_model(files["ctc_resumed_last"]), fp16.to_dict())
    pretrained = w2v2.load_model(files["pretrain_last"])
    files["saved_pretrain"] = root / "saved_pretrain.pt"
    save_checkpoint(files["saved_pretrain"], pretrained)
    dictionary = Dictionary.load(tiny_manifest / "dict.ltr.txt")
    files["saved_ctc_bare"] = root / "saved_ctc.pt"
    save_checkpoint(files["saved_ctc_bare"], Wav2Vec2Ctc(Wav2Vec2CtcConfig(), pretrained.cfg, len(dictionary)),
                    dictionary=dictionary)
    return files


def lookup(cfg: Dict[str, Any], path: str) -> Any:
    """The value at a dotted path; KeyError names the first missing key."""
    node: Any = cfg
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(path)
        node = node[key]
    return node


def has(cfg: Dict[str, Any], path: str) -> bool:
    try:
        lookup(cfg, path)
    except KeyError:
        return False
    return True


KINDS = ["pretrain_last", "pretrain_interval", "pretrain_best", "ctc_best", "ctc_interval", "ctc_resumed_last",
         "ctc_from_args_era", "ctc_fp16", "saved_pretrain", "saved_ctc_bare"]


@pytest.mark.parametrize("kind", KINDS)
def test_file_holds_what_fairseqs_loader_reads(written, kind):
    cfg = load_checkpoint_file(written[kind])["cfg"]
    for scenario in SCENARIOS[cfg["model"]["_name"]]:
        reads = READS[scenario]
        assert [p for p in reads["read"] if not has(cfg, p)] == [], scenario
        assert [p for p in reads["dicts"] if not isinstance(lookup(cfg, p), dict)] == [], scenario
        assert [p for p in reads["read_if_present"] if has(cfg, p)] == [], scenario


@pytest.mark.parametrize("kind", KINDS)
def test_every_dataclass_group_is_a_full_dict(written, kind):
    cfg = load_checkpoint_file(written[kind])["cfg"]
    table = fairseq_defaults()
    roots = [cfg] + ([cfg["model"]["w2v_args"]] if cfg["model"]["_name"] == "wav2vec_ctc" else [])
    for root in roots:
        for group, defaults in table["groups"].items():
            assert isinstance(root[group], dict) and set(defaults) <= set(root[group]), group
        task = table["named_groups"]["task"][root["task"]["_name"]]
        assert set(task) <= set(root["task"])
        if "eval_wer_config" in task:
            assert set(task["eval_wer_config"]) <= set(root["task"]["eval_wer_config"])
    assert cfg["common"]["fp16"] is (kind == "ctc_fp16")


def test_our_own_keys_are_in_a_group_fairseqs_loaders_never_read():
    """The speed keys of ours (docs/SPEED.md) are written into `cfg.common`, where no traced fairseq load
    reads anything; `fairseq_outputs.py` loaded such files (pretraining and fine-tuned) with fairseq."""
    ours = {"compile", "compile_dynamic", "feature_cache"}
    assert ours <= {f.name for f in dataclasses.fields(CommonConfig)}
    assert ours.isdisjoint(fairseq_defaults()["groups"]["common"])
    paths = [path for scenario in READS.values() for key in ("read", "read_if_present", "dicts")
             for path in scenario.get(key, [])]
    assert len(paths) > 100 and not [path for path in paths if "common" in path.split(".")]
