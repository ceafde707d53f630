"""fairseq configs: the Hydra-era `cfg` dict, and pre-2021 `args` Namespaces converted to it."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Mapping, Optional

from w2v2.data.config import TASK_CONFIGS, AudioPretrainingConfig
from w2v2.errors import W2v2Error
from w2v2.models.config import MODEL_CONFIGS
from w2v2.schema import groups_from_flat


def config_from_checkpoint(state: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """The checkpoint's config as a plain dict of groups, from `cfg` or a legacy `args`."""
    cfg = state.get("cfg")
    if cfg is not None:
        return to_plain(cfg)
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return config_from_args(args)
    raise W2v2Error(f"{where} has neither a `cfg` nor an `args` entry, so its model cannot be built.")


def to_plain(value: Any) -> Any:
    """Nested dicts/lists of plain values (OmegaConf containers and Namespaces converted)."""
    if isinstance(value, argparse.Namespace):
        return config_from_args(value)
    if hasattr(value, "items"):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """Groups for a pre-2021 flat Namespace (`arch`, `task` and every field by its legacy name)."""
    values = vars(args)
    arch = values.get("arch")
    if arch not in MODEL_CONFIGS:
        raise W2v2Error(f"legacy checkpoint args have `arch` = {arch!r}; only wav2vec2 and wav2vec_ctc are supported.")
    task_schema = TASK_CONFIGS.get(values.get("task"), AudioPretrainingConfig)
    groups = groups_from_flat(values, {"task": task_schema, "model": MODEL_CONFIGS[arch]})
    groups["model"]["_name"], groups["task"]["_name"] = arch, values.get("task")
    if groups["model"].get("w2v_args") is not None:
        groups["model"]["w2v_args"] = to_plain(groups["model"]["w2v_args"])
    return {**groups, "criterion": {"_name": values.get("criterion")}}


def pretraining_config_of(ctc_model_group: Mapping[str, Any], where: str) -> Optional[Dict[str, Any]]:
    """The pretraining config a fine-tuned model was built from (`w2v_args`), if stored."""
    w2v_args = ctc_model_group.get("w2v_args")
    if w2v_args is None:
        return None
    w2v_args = to_plain(w2v_args)
    if "model" not in w2v_args:
        raise W2v2Error(f"{where}: `model.w2v_args` has no `model` group.")
    return w2v_args
