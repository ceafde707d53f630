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
        if "GLOBAL" not in str(error):
            raise W2v2Error(f"checkpoint {path} is not a readable PyTorch checkpoint: {error}") from error
        if not trusted:
            reason = next(line for line in str(error).splitlines() if "GLOBAL" in line).strip()
            raise W2v2Error(
                f"checkpoint {path} holds objects outside the safe allow-list (tensors, argparse.Namespace, "
                f"fairseq's Dictionary): {reason} Loading it could run arbitrary code, so it was refused. "
                "If you trust where the file came from, pass trusted=True (or --trust-checkpoint)."
            ) from error
        state = _load_trusted(path)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise W2v2Error(f"checkpoint {path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(state, dict) or "model" not in state:
        raise W2v2Error(f"checkpoint {path} must be a dict with a 'model' state dict, but it is not.")
    return state


def _load_trusted(path: Path) -> Dict[str, Any]:
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
