"""Loading checkpoint files without running code from them (`weights_only` plus a short allow-list)."""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator

import torch

from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error

FAIRSEQ_DICTIONARY = "fairseq.data.dictionary.Dictionary"
# What a fairseq checkpoint may pickle besides tensors and builtins.
ALLOWED = [argparse.Namespace, (Dictionary, FAIRSEQ_DICTIONARY)]


class _StandInUnpickler(pickle.Unpickler):
    """Full unpickler for trusted files that maps fairseq's Dictionary to ours (fairseq need not be installed)."""

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" == FAIRSEQ_DICTIONARY:
            return Dictionary
        return super().find_class(module, name)


_trusted_pickle = types.SimpleNamespace(Unpickler=_StandInUnpickler, load=pickle.load, __name__="pickle")


def load_checkpoint_file(path: str | os.PathLike, trusted: bool = False) -> Dict[str, Any]:
    """The checkpoint dict at `path`; anything beyond the allow-list needs `trusted=True`.

    A transformers model folder and our `.safetensors` files give the same dict (fairseq's layout);
    neither can hold code, so `trusted` does not matter for them.
    """
    path = Path(path)
    # Imported here: both need the optional safetensors package, and hf imports this module.
    if path.is_dir():
        from w2v2.interop.hf import hf_checkpoint_dict, is_hf_folder

        if not is_hf_folder(path):
            raise W2v2Error(f"checkpoint {path} is a folder without a config.json, so it is not a transformers "
                            "model folder; pass a checkpoint file or such a folder.")
        return hf_checkpoint_dict(path)
    if not path.is_file():
        raise W2v2Error(f"checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from w2v2.interop.safetensors_io import load_safetensors_checkpoint

        return load_safetensors_checkpoint(path)
    try:
        with torch.serialization.safe_globals(ALLOWED):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _is_pickle(path):
            raise W2v2Error(f"checkpoint {path} is not a readable PyTorch checkpoint: it is neither torch's zip "
                            "format nor a pickle.") from error
        if not trusted:
            raise _refused(path, error) from error
        state = _load_trusted(path)
    except Exception as error:  # the safe unpickler runs no code, but garbage makes it fail in many ways
        raise W2v2Error(f"checkpoint {path} is not a readable PyTorch checkpoint (truncated, corrupt, or another "
                        f"kind of file): {_torch_reason(error)}") from error
    return checked_layout(state, path)


def checked_layout(state: Any, path: object) -> Dict[str, Any]:
    """`state` when it has fairseq's layout: a dict whose `model` is a state dict of tensors."""
    if not isinstance(state, dict) or "model" not in state:
        raise W2v2Error(f"checkpoint {path} must be a dict with a 'model' state dict, but it is not.")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        shown = type(weights).__name__ if not isinstance(weights, dict) else "a dict holding other values than tensors"
        raise W2v2Error(f"checkpoint {path}: 'model' must be a state dict (parameter name -> tensor), but it is "
                        f"{shown} instead.")
    return state


def _is_pickle(path: Path) -> bool:
    """Whether `path` is a zip archive (torch's format) or starts like a pickle of protocol 2 or later."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith((b"PK\x03\x04", b"\x80"))


def _refused(path: Path, error: pickle.UnpicklingError) -> W2v2Error:
    """Our reason for not unpickling `path`: a class outside the allow-list, or pickle code the safe loader lacks."""
    lines = str(error).splitlines()
    found = next((_without_advice(line) for line in lines if "GLOBAL" in line), None)
    reason = (f"holds objects outside the safe allow-list (tensors, argparse.Namespace, fairseq's Dictionary): {found}"
              if found else f"is not a plain checkpoint: the safe unpickler stopped at {_torch_reason(error)}")
    return W2v2Error(f"checkpoint {path} {reason} Loading it could run arbitrary code, so it was refused. If you "
                     "trust where the file came from, pass trusted=True (or --trust-checkpoint).")


def _without_advice(line: str) -> str:
    """A line of torch's message less its `WeightsUnpickler error:` label and its advice ("Please use ...")."""
    return line.split("WeightsUnpickler error:", 1)[-1].split(" Please use", 1)[0].strip()


def _torch_reason(error: BaseException) -> str:
    """The cause in torch's message, without its advice to load with weights_only=False."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[index + 1:] or [""])[0]
            return detail.rstrip(".") + "."
    kept = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    text = kept[0] if kept else ""
    if not any(char.isalpha() for char in text):  # e.g. KeyError: 101 from a text file
        text = f"{type(error).__name__} {text}".strip()
    return text.rstrip(".") + "."


def _load_trusted(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_trusted_pickle)
    except Exception as error:  # a trusted file may fail in any way unpickling can
        raise W2v2Error(f"checkpoint {path} could not be unpickled even as trusted: {error}") from error


class FairseqDictionary(Dictionary):
    """Our Dictionary under fairseq's class path, so that fairseq can unpickle the files we write.

    It pickles as `fairseq.data.dictionary.Dictionary` (with the attributes fairseq's class has) and
    is only ever pickled inside `pickled_as_fairseq_dictionary()`.
    """


FairseqDictionary.__module__ = "fairseq.data.dictionary"
FairseqDictionary.__qualname__ = "Dictionary"


@contextlib.contextmanager
def pickled_as_fairseq_dictionary() -> Iterator[None]:
    """Make `fairseq.data.dictionary.Dictionary` resolve to `FairseqDictionary` while pickling."""
    names = ("fairseq", "fairseq.data", "fairseq.data.dictionary")
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["fairseq.data.dictionary"].Dictionary = FairseqDictionary  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def as_fairseq_dictionary(dictionary: Dictionary) -> Dictionary:
    """A copy of `dictionary` that pickles under fairseq's class name."""
    copy = FairseqDictionary.__new__(FairseqDictionary)
    copy.__dict__.update(vars(dictionary))
    return copy
