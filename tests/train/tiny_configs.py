"""The tiny fixture configs on the test corpus, with overrides, for tests of what config keys do."""

from __future__ import annotations

from pathlib import Path

import yaml

from w2v2.train.config import FinetuningConfig, PretrainingConfig
from w2v2.train.config_loading import load_train_config
from tests.corpus import FIXTURE_CONFIGS

PRETRAINED = Path(__file__).parents[1] / "fixtures" / "fairseq" / "pretrain_init.pt"


def config(name: str, manifest: Path, *overrides: str) -> PretrainingConfig | FinetuningConfig:
    """The fixture config `name` on `manifest`; `key=value` overrides of keys its YAML lacks get their `+`."""
    tree = yaml.safe_load((FIXTURE_CONFIGS / f"{name}.yaml").read_text())
    extra = [f"model.w2v_path={PRETRAINED}"] if name == "tiny_ctc" else []
    added = []
    for item in overrides:
        group, key = item.split("=")[0].split(".")
        absent = (group in ("task", "model", "criterion", "optimizer", "lr_scheduler") and key not in tree[group]
                  and not item.startswith("+"))
        added.append("+" + item if absent else item)
    return load_train_config(str(FIXTURE_CONFIGS), name, [f"task.data={manifest}", *extra, *added]).cfg


def pretraining(manifest: Path, *overrides: str) -> PretrainingConfig:
    """tiny_pretrain.yaml with `overrides`."""
    return config("tiny_pretrain", manifest, *overrides)


def finetuning(manifest: Path, *overrides: str) -> FinetuningConfig:
    """tiny_ctc.yaml on the fixture pretrained model, with `overrides`."""
    return config("tiny_ctc", manifest, *overrides)
