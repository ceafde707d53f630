"""Models in and out of fairseq's checkpoint layout; the state-dict keys are the same on both sides."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write
from w2v2.interop.fairseq_config import config_from_checkpoint, pretraining_config_of
from w2v2.interop.fairseq_defaults import complete_cfg
from w2v2.interop.safe_load import as_fairseq_dictionary, load_checkpoint_file, pickled_as_fairseq_dictionary
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model

Model = Union[Wav2Vec2Model, Wav2Vec2Ctc]


def load_model(path: Union[str, os.PathLike], *, trusted: bool = False) -> Model:
    """The model stored in a fairseq (or w2v2) checkpoint, our `.safetensors` file or a transformers
    folder, in eval mode.

    The returned model carries `fairseq_cfg` (the file's config groups) and, for CTC models,
    `dictionary` (the target letters, when the file stores them).
    """
    return model_from_checkpoint(load_checkpoint_file(path, trusted=trusted), str(path), trusted=trusted)


def model_from_checkpoint(state: Dict[str, Any], where: str, trusted: bool = False) -> Model:
    """The model of a checkpoint dict already read (see `load_model`), in eval mode."""
    cfg = config_from_checkpoint(state, where)
    model = build_model(cfg, where, state["model"], trusted=trusted)
    load_state(model, state["model"], where)
    refuse_non_finite(state["model"], where)
    model.fairseq_cfg = cfg
    if isinstance(model, Wav2Vec2Ctc):
        model.dictionary = (state.get("task_state") or {}).get("target_dictionary")
    return model.eval()


def build_model(cfg: Dict[str, Any], where: str, weights: Optional[Dict[str, torch.Tensor]] = None,
                trusted: bool = False) -> Model:
    """A freshly initialised model for a config dict of groups."""
    group = cfg.get("model") or {}
    name = group.get("_name")
    if name == "wav2vec2":
        return Wav2Vec2Model(Wav2Vec2Config.from_dict(group))
    if name == "wav2vec_ctc":
        ctc_cfg = Wav2Vec2CtcConfig.from_dict(group)
        pretraining = pretraining_config_of(group, where)
        if pretraining is None:
            if not ctc_cfg.w2v_path:
                raise W2v2Error(f"{where}: `model.w2v_args` and `model.w2v_path` are both empty.")
            pretraining = config_from_checkpoint(load_checkpoint_file(ctc_cfg.w2v_path, trusted), ctc_cfg.w2v_path)
        pretrained = Wav2Vec2Config.from_dict(pretraining["model"], "model.w2v_args.model")
        if weights is None or "w2v_encoder.proj.weight" not in weights:
            raise W2v2Error(f"{where}: the output size is unknown (no `w2v_encoder.proj.weight`).")
        return Wav2Vec2Ctc(ctc_cfg, pretrained, weights["w2v_encoder.proj.weight"].size(0))
    raise W2v2Error(f"{where}: `model._name` must be 'wav2vec2' or 'wav2vec_ctc', but is {name!r} instead.")


def load_state(model: nn.Module, weights: Dict[str, torch.Tensor], where: str) -> None:
    """Copy `weights` into `model` key by key, with shape checks; mismatches name the keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("shape mismatches (file vs model)", wrong)) if items]
        raise W2v2Error(f"{where}: the weights do not fit the model its config describes; " + "; ".join(parts) + ".")
    model.load_state_dict(weights, strict=True)


def refuse_non_finite(weights: Dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged run): such a model outputs NaN on every input."""
    bad = [key for key, value in weights.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise W2v2Error(f"{where}: {len(bad)} weight tensors hold NaN or infinite values ({', '.join(bad[:3])}"
                        f"{' …' if len(bad) > 3 else ''}), so the model would output NaN; use a checkpoint saved "
                        "before the run diverged.")


def model_config(model: Model) -> Dict[str, Any]:
    """The `model` group fairseq needs to rebuild `model`."""
    if isinstance(model, Wav2Vec2Ctc):
        # fairseq builds the encoder from w2v_args.model as it stands (it puts the fine-tuning values in only
        # when it reads w2v_path), so the group is the encoder's own config, fine-tuning values included
        pretraining = model.cfg.w2v_args or {"task": {"_name": "audio_pretraining", "normalize": model.cfg.normalize}}
        return {**model.cfg.to_dict(), "w2v_args": {**pretraining, "model": model.w2v_encoder.w2v_model.cfg.to_dict()}}
    return model.cfg.to_dict()


def save_checkpoint(
    path: Union[str, os.PathLike],
    model: Model,
    cfg: Optional[Dict[str, Any]] = None,
    *,
    dictionary: Optional[Dictionary] = None,
    num_updates: int = 0,
    optimizer_state: Optional[Dict[str, Any]] = None,
    extra_state: Optional[Dict[str, Any]] = None,
) -> None:
    """Write `model` in fairseq's checkpoint layout, atomically (temporary file, then rename)."""
    state = checkpoint_dict(model, cfg, dictionary=dictionary, num_updates=num_updates,
                            optimizer_state=optimizer_state, extra_state=extra_state)
    atomic_torch_save(state, Path(path))


def checkpoint_dict(
    model: Model,
    cfg: Optional[Dict[str, Any]] = None,
    *,
    dictionary: Optional[Dictionary] = None,
    num_updates: int = 0,
    lr_scheduler_state: Optional[Dict[str, Any]] = None,
    optimizer_state: Optional[Dict[str, Any]] = None,
    extra_state: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """fairseq's checkpoint dict for `model` and the config groups `cfg` (default: the model's own),
    every group fairseq stores completed with fairseq's defaults so that fairseq's loader reads it."""
    groups = dict(cfg if cfg is not None else model.fairseq_cfg)
    groups["model"] = model_config(model)
    groups.setdefault("task", {"_name": "audio_finetuning" if isinstance(model, Wav2Vec2Ctc) else "audio_pretraining"})
    dictionary = dictionary if dictionary is not None else (model.dictionary if isinstance(model, Wav2Vec2Ctc) else None)
    # no `best` until a validation sets one, as fairseq writes it: its resume compares a stored None with the
    # next validation's value and fails
    extra = {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}, "val_loss": None,
             "metrics": {}, "previous_training_time": 0.0}
    extra.update(extra_state or {})
    task_state: Dict[str, Any] = {}
    if dictionary is not None:
        task_state["target_dictionary"] = as_fairseq_dictionary(dictionary)
    return {
        "args": None,
        "cfg": complete_cfg(groups),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "CtcCriterion" if isinstance(model, Wav2Vec2Ctc) else "Wav2vecCriterion",
            "optimizer_name": "FairseqAdam", "lr_scheduler_state": lr_scheduler_state or {"best": None},
            "num_updates": num_updates,
        }],
        "task_state": task_state,
        "extra_state": extra,
        "last_optimizer_state": optimizer_state,
    }


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(f"cannot write checkpoint {path}: {error.strerror}.") from error
    try:
        with atomic_write(path, "wb") as handle, pickled_as_fairseq_dictionary():
            torch.save(obj, handle)
    except RuntimeError as error:  # torch's zip writer turns a failed write (a full disk) into a RuntimeError
        free = shutil.disk_usage(path.parent).free / 2**20
        raise W2v2Error(f"cannot write checkpoint {path}: the write failed with {free:.1f} MiB free on its disk "
                        f"({str(error).splitlines()[0]}).") from error
