"""safetensors files (tensors only, nothing to unpickle): transformers' weights, and our own checkpoints,
whose config and dictionary travel as JSON in the file's header under `w2v2`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write

METADATA_KEY = "w2v2"
PathLike = Union[str, os.PathLike]


def _safetensors() -> Any:
    """The `safetensors` package, an optional dependency (the `hf` extra)."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError as error:
        raise W2v2Error("reading or writing .safetensors files needs the `safetensors` package: "
                        "pip install 'w2v2[hf]'.") from error
    return safetensors


def read_safetensors(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors of a safetensors file and its header's metadata."""
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (OSError, ValueError, RuntimeError, safetensors.SafetensorError) as error:
        raise W2v2Error(f"{path} is not a readable safetensors file: {error}.") from error


def write_safetensors(path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Write `tensors` (made contiguous) with `metadata` atomically."""
    data = _safetensors().torch.save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def save_safetensors_checkpoint(path: PathLike, model: torch.nn.Module) -> None:
    """Our checkpoint of `model` as safetensors: its weights, and its `cfg` and dictionary in the header."""
    from w2v2.interop.checkpoints import checkpoint_dict  # checkpoints -> safe_load -> this module

    state = checkpoint_dict(model)
    dictionary = state["task_state"].get("target_dictionary")
    symbols = None
    if dictionary is not None:
        first = dictionary.nspecial
        symbols = [[s, c] for s, c in zip(dictionary.symbols[first:], dictionary.count[first:])]
    try:
        header = json.dumps({"cfg": state["cfg"], "dictionary": symbols})
    except (TypeError, ValueError) as error:
        raise W2v2Error(f"cannot write {path}: the model's config is not plain JSON data ({error}).") from error
    write_safetensors(path, state["model"], {"format": "pt", METADATA_KEY: header})


def load_safetensors_checkpoint(path: PathLike) -> Dict[str, Any]:
    """The checkpoint dict (fairseq's layout: `cfg`, `model`, `task_state`) of our safetensors file."""
    tensors, metadata = read_safetensors(path)
    if METADATA_KEY not in metadata:
        raise W2v2Error(f"{path} is a safetensors file without w2v2's config in its header, so the model it holds "
                        "is unknown; to load a transformers model, pass the folder that holds it and its config.json.")
    try:
        header = json.loads(metadata[METADATA_KEY])
        cfg, symbols = header["cfg"], header["dictionary"]
    except (ValueError, KeyError, TypeError) as error:
        raise W2v2Error(f"{path}: the `{METADATA_KEY}` header entry is not w2v2's config JSON ({error}).") from error
    task_state = {}
    if symbols is not None:
        task_state["target_dictionary"] = Dictionary([s for s, _ in symbols], [c for _, c in symbols])
    return {"args": None, "cfg": cfg, "model": tensors, "task_state": task_state}


def is_safetensors(path: Path) -> bool:
    """Whether `path` names a safetensors file (by its suffix)."""
    return path.suffix == ".safetensors"
