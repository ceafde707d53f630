"""The one module that knows CPU, CUDA and Ascend NPU: device choice, backends, precision switches, memory.

Nothing else in the package says `cuda` or `npu`. NPU support comes from `torch_npu`, imported only
here and only when an NPU is asked for or auto-detected.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, Optional

import torch

from w2v2.errors import W2v2Error

KINDS = ("cpu", "cuda", "npu")


def import_npu() -> Optional[ModuleType]:
    """`torch.npu` once `torch_npu` is importable and an NPU is present, else None."""
    try:
        importlib.import_module("torch_npu")
    except ImportError:
        return None
    npu = getattr(torch, "npu", None)
    return npu if npu is not None and npu.is_available() else None


def accelerator(kind: str) -> Optional[Any]:
    """The torch sub-module driving `kind` (`torch.cuda` or `torch.npu`), or None for the CPU."""
    if kind == "cuda":
        return torch.cuda if torch.cuda.is_available() else None
    if kind == "npu":
        return import_npu()
    return None


def best_kind() -> str:
    """npu, else cuda, else cpu — whatever this machine has."""
    for kind in ("npu", "cuda"):
        if accelerator(kind) is not None:
            return kind
    return "cpu"


def pick_device(requested: Optional[str] = None, local_rank: int = 0) -> torch.device:
    """The device for this process: `requested` ('cpu', 'cuda', 'npu', 'auto'/None) on `local_rank`."""
    kind = best_kind() if requested in (None, "", "auto") else requested
    if kind not in KINDS:
        raise W2v2Error(f"`device` must be one of auto, {', '.join(KINDS)}, but is {requested!r} instead.")
    if kind == "cpu":
        return torch.device("cpu")
    module = accelerator(kind)
    if module is None:
        raise W2v2Error(f"device {kind!r} was asked for, but none is available on this machine "
                        f"({'torch_npu is missing or finds no NPU' if kind == 'npu' else 'torch finds no CUDA GPU'}).")
    if local_rank >= module.device_count():
        raise W2v2Error(f"local rank {local_rank} needs {kind}:{local_rank}, but only "
                        f"{module.device_count()} {kind} device(s) are visible.")
    module.set_device(local_rank)
    return torch.device(kind, local_rank)


def distributed_backend(device: torch.device) -> str:
    """The collective backend for `device`: hccl on NPU, nccl on CUDA, gloo on CPU."""
    return {"npu": "hccl", "cuda": "nccl"}.get(device.type, "gloo")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype of training (None = fp32), whether gradients need dynamic loss scaling, and
    whether validation autocasts too."""

    autocast_dtype: Optional[torch.dtype]
    loss_scaling: bool
    autocast_validation: bool = True

    @property
    def validation_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype of validation (None = fp32)."""
        return self.autocast_dtype if self.autocast_validation else None


def precision(device: torch.device, fp16: bool = False, bf16: bool = False, amp: bool = False) -> Precision:
    """fairseq's `common.fp16` / `common.bf16` / `common.amp` as torch.amp settings for `device`.

    fp16 and amp both train under float16 autocast with a loss scaler; like fairseq's, amp validates in
    fp32 (fairseq's `valid_step` has no autocast, while its fp16 mode runs a half-precision model)."""
    chosen = [f"`common.{name}`" for name, on in (("fp16", fp16), ("bf16", bf16), ("amp", amp)) if on]
    if len(chosen) > 1:
        raise W2v2Error(f"{' and '.join(chosen)} cannot {'both' if len(chosen) == 2 else 'all'} be true; "
                        "choose one precision.")
    if (fp16 or amp) and device.type == "cpu":
        raise W2v2Error(f"{chosen[0]} needs a GPU or NPU; on the CPU use `common.bf16=true` or fp32.")
    if fp16 or amp:
        return Precision(torch.float16, loss_scaling=True, autocast_validation=fp16)
    return Precision(torch.bfloat16 if bf16 else None, loss_scaling=False)


def set_reduced_precision_matmul(device: torch.device, allow: bool) -> None:
    """TF32 on CUDA / HF32 on NPU for matmuls and convolutions (`--hf32`); `allow=False` is strict fp32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
    elif device.type == "npu":
        npu = accelerator("npu")
        npu.matmul.allow_hf32 = allow  # type: ignore[union-attr]
        npu.conv.allow_hf32 = allow  # type: ignore[union-attr]


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so timings measure work done."""
    module = accelerator(device.type)
    if module is not None:
        module.synchronize()


def memory_stats(device: torch.device) -> Dict[str, float]:
    """Peak allocated memory in GiB since the last reset (empty on the CPU)."""
    module = accelerator(device.type)
    if module is None:
        return {}
    return {"peak_mem_gib": module.max_memory_allocated(device) / 2**30}


def reset_peak_memory(device: torch.device) -> None:
    module = accelerator(device.type)
    if module is not None:
        module.reset_peak_memory_stats(device)


def pin_memory(device: torch.device) -> bool:
    """Whether DataLoaders should pin host memory for this device."""
    return device.type in ("cuda", "npu")


def empty_cache(device: torch.device) -> None:
    """Hand the accelerator's cached, unused memory back to the driver (nothing to do on the CPU)."""
    module = accelerator(device.type)
    if module is not None:
        module.empty_cache()
