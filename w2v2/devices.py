"""The one module that knows CPU, CUDA and Ascend NPU: device choice, backends, precision switches,
collective dtypes, loss scalers, RNG states, static shapes and memory.

Nothing else in the package says `cuda` or `npu`. NPU support comes from `torch_npu`, imported only
here and only when an NPU is asked for or auto-detected. Every accelerator branch dispatches on
`kind(device)`, so that tests can run the NPU branches on the CPU against a stand-in `torch.npu`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch

from w2v2.errors import W2v2Error

logger = logging.getLogger(__name__)

KINDS = ("cpu", "cuda", "npu")
# The dtypes HCCL reduces on every Ascend training product (CANN's HcclAllReduce: Atlas training
# series int8/int32/int64/float16/float32; A2/A3 add int16 and bfloat16); no float64 anywhere.
HCCL_REDUCE_DTYPES = (torch.int8, torch.int32, torch.int64, torch.float16, torch.float32)
COUNT_DTYPE, SUM_DTYPE = torch.int64, torch.float32  # what our own all-reduces send, on every backend
NPU_BATCH_BUCKETS = 16  # `task.num_batch_buckets` on the NPU when the config leaves it at 0
TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# Above this size glibc gives each allocation its own mapping and unmaps it when freed; 1 GiB: none of a step's.
KEEP_MMAP_THRESHOLD = 1 << 30
KEEP_TRIM_THRESHOLD = (1 << 31) - 1  # free memory at the heap's top handed back only beyond this (an int's most)
# Each buffer of this size or more mapped on its own, so it goes back as soon as it is freed: a BASE layer's
# (T, B, 768) activation for 2 x 15 s is 4.6 MB.
RETURN_MMAP_THRESHOLD = 4 << 20


def kind(device: Any) -> str:
    """The device family whose branch serves `device` ('cpu', 'cuda' or 'npu')."""
    return device.type


@functools.lru_cache(maxsize=1)
def _npu_probe() -> Tuple[Optional[ModuleType], str]:
    """(`torch.npu`, '') when torch_npu imports and sees an NPU, else (None, why not)."""
    if importlib.util.find_spec("torch_npu") is None:
        return None, "torch_npu is not installed"
    try:
        importlib.import_module("torch_npu")
    except Exception as error:  # a broken CANN install fails with ImportError, OSError or RuntimeError
        return None, (f"`import torch_npu` failed ({type(error).__name__}: {error}); source CANN's set_env.sh "
                      "and check that torch_npu matches the installed torch")
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available():
        return None, "torch_npu imports but finds no NPU (check ASCEND_RT_VISIBLE_DEVICES and the driver)"
    return npu, ""


def import_npu() -> Optional[ModuleType]:
    """`torch.npu` once `torch_npu` is importable and an NPU is present, else None."""
    return _npu_probe()[0]


def npu_unavailable_reason() -> str:
    """Why no NPU can be used here ('' when one can)."""
    return "" if import_npu() is not None else _npu_probe()[1]


def accelerator(device_kind: str) -> Optional[Any]:
    """The torch sub-module driving `device_kind` (`torch.cuda` or `torch.npu`), or None for the CPU."""
    if device_kind == "cuda":
        return torch.cuda if torch.cuda.is_available() else None
    if device_kind == "npu":
        return import_npu()
    return None


def best_kind() -> str:
    """npu, else cuda, else cpu — whatever this machine has; says so when torch_npu is there but broken."""
    for candidate in ("npu", "cuda"):
        if accelerator(candidate) is not None:
            return candidate
    reason = npu_unavailable_reason()
    if reason.startswith("`import torch_npu` failed"):
        logger.warning("no NPU for this run: %s.", reason)
    return "cpu"


def pick_device(requested: Optional[str] = None, local_rank: int = 0) -> torch.device:
    """The device for this process: `requested` ('cpu', 'cuda', 'npu', 'auto'/None) on `local_rank`."""
    chosen = best_kind() if requested in (None, "", "auto") else requested
    if chosen not in KINDS:
        raise W2v2Error(f"`device` must be one of auto, {', '.join(KINDS)}, but is {requested!r} instead.")
    if chosen == "cpu":
        return torch.device("cpu")
    module = accelerator(chosen)
    if module is None:
        why = npu_unavailable_reason() if chosen == "npu" else "torch finds no CUDA GPU"
        raise W2v2Error(f"device {chosen!r} was asked for, but none is available on this machine ({why}).")
    if local_rank >= module.device_count():
        raise W2v2Error(f"local rank {local_rank} needs {chosen}:{local_rank}, but only "
                        f"{module.device_count()} {chosen} device(s) are visible.")
    module.set_device(local_rank)
    if chosen == "npu":
        _static_compile(module)
    return torch.device(chosen, local_rank)


def _static_compile(npu: Any) -> None:
    """The fork's NPU settings: binary kernels instead of per-shape JIT compilation, and an on-disk
    operator cache (`ACL_OP_COMPILER_CACHE_DIR`, default ~/.cache/w2v2/npu_op_cache)."""
    npu.set_compile_mode(jit_compile=False)
    folder = os.environ.get("ACL_OP_COMPILER_CACHE_DIR") or os.path.expanduser("~/.cache/w2v2/npu_op_cache")
    os.makedirs(folder, exist_ok=True)
    npu.set_option({"ACL_OP_COMPILER_CACHE_MODE": os.environ.get("ACL_OP_COMPILER_CACHE_MODE", "enable"),
                    "ACL_OP_COMPILER_CACHE_DIR": folder})


def distributed_backend(device: Any) -> str:
    """The collective backend for `device`: hccl on NPU, nccl on CUDA, gloo on CPU."""
    return {"npu": "hccl", "cuda": "nccl"}.get(kind(device), "gloo")


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


def precision(device: Any, fp16: bool = False, bf16: bool = False, amp: bool = False) -> Precision:
    """fairseq's `common.fp16` / `common.bf16` / `common.amp` as torch.amp settings for `device`.

    fp16 and amp both train under float16 autocast with a loss scaler; like fairseq's, amp validates in
    fp32 (fairseq's `valid_step` has no autocast, while its fp16 mode runs a half-precision model)."""
    chosen = [f"`common.{name}`" for name, on in (("fp16", fp16), ("bf16", bf16), ("amp", amp)) if on]
    if len(chosen) > 1:
        raise W2v2Error(f"{' and '.join(chosen)} cannot {'both' if len(chosen) == 2 else 'all'} be true; "
                        "choose one precision.")
    if (fp16 or amp) and kind(device) == "cpu":
        raise W2v2Error(f"{chosen[0]} needs a GPU or NPU; on the CPU use `common.bf16=true` or fp32.")
    if fp16 or amp:
        return Precision(torch.float16, loss_scaling=True, autocast_validation=fp16)
    return Precision(torch.bfloat16 if bf16 else None, loss_scaling=False)


def matmul_mode(env: Mapping[str, str]) -> str:
    """'fp32', 'hf32' or '' (torch's defaults) from `W2V2_MATMUL_PRECISION` or the fork's `ALLOW_FP32` /
    `ALLOW_HF32` variables (any non-empty value sets them, as in the fork)."""
    mode = env.get("W2V2_MATMUL_PRECISION", "")
    if mode and mode not in ("fp32", "hf32", "tf32"):
        raise W2v2Error(f"`W2V2_MATMUL_PRECISION` must be fp32, hf32 or tf32, but is {mode!r} instead.")
    if env.get("ALLOW_FP32") and env.get("ALLOW_HF32"):
        raise W2v2Error("`ALLOW_FP32` and `ALLOW_HF32` cannot both be set; set one of them at most.")
    fork = "fp32" if env.get("ALLOW_FP32") else "hf32" if env.get("ALLOW_HF32") else ""
    mode = "hf32" if mode == "tf32" else mode
    if mode and fork and mode != fork:
        raise W2v2Error(f"`W2V2_MATMUL_PRECISION={mode}` contradicts `ALLOW_{fork.upper()}`; set one of them.")
    return mode or fork


def set_matmul_precision(device: Any, mode: str) -> None:
    """`mode` 'fp32': no TF32/HF32 anywhere. 'hf32': on the NPU convolutions in HF32 with matmuls
    untouched (the fork's `--hf32`, torch_npu's defaults), on CUDA TF32 matmuls and convolutions."""
    if not mode:
        return
    allow = mode == "hf32"
    if kind(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
    elif kind(device) == "npu":
        npu = accelerator("npu")
        npu.conv.allow_hf32 = allow  # type: ignore[union-attr]
        if not allow:
            npu.matmul.allow_hf32 = False  # type: ignore[union-attr]


def all_reduce_stats(counts: torch.Tensor, sums: torch.Tensor) -> None:
    """Sum integer `counts` (int64) and float `sums` (float32) over ranks in place: dtypes every
    backend reduces, HCCL included (it has no float64)."""
    import torch.distributed as dist

    for tensor, dtype in ((counts, COUNT_DTYPE), (sums, SUM_DTYPE)):
        if tensor.dtype != dtype:
            raise W2v2Error(f"collective stats must be {dtype}, but a tensor of {tensor.dtype} was given.")
    dist.all_reduce(counts)
    dist.all_reduce(sums)


def grad_scaler(device: Any, init_scale: float, growth_interval: int, enabled: bool) -> Any:
    """The device's own dynamic loss scaler: torch_npu's float-status GradScaler on the NPU (it sees
    saturation-mode overflows), torch.amp.GradScaler elsewhere."""
    if kind(device) == "npu" and enabled:
        return accelerator("npu").amp.GradScaler(init_scale=init_scale,  # type: ignore[union-attr]
                                                 growth_interval=growth_interval, enabled=enabled)
    return torch.amp.GradScaler(kind(device), init_scale=init_scale, growth_interval=growth_interval,
                                enabled=enabled)


def _saturating_npu(device: Any) -> Optional[Any]:
    """`torch.npu` when `device` is an NPU in saturation mode (overflows give finite extremes, no inf)."""
    if kind(device) != "npu":
        return None
    npu = accelerator("npu")
    return None if npu is None or npu.utils.is_support_inf_nan() else npu


def clear_overflow(device: Any) -> None:
    """Reset the device's overflow status before an update (the NPU's float status register)."""
    npu = _saturating_npu(device)
    if npu is not None:
        npu.clear_npu_overflow_flag()


def overflowed(device: Any, grad_norm: float) -> bool:
    """Whether this rank's update overflowed: a non-finite gradient norm, or on a saturating NPU the
    float status set by any kernel since `clear_overflow`."""
    if not math.isfinite(grad_norm):
        return True
    npu = _saturating_npu(device)
    return bool(npu is not None and npu.get_npu_overflow_flag())


def get_rng_state(device: Any) -> Optional[torch.Tensor]:
    """The RNG state of this process's accelerator (None on the CPU), as a CPU byte tensor."""
    module = accelerator(kind(device))
    return None if module is None else module.get_rng_state(device).cpu()


def set_rng_state(device: Any, state: torch.Tensor) -> None:
    """Restore a state from `get_rng_state` into this process's accelerator (nothing on the CPU)."""
    module = accelerator(kind(device))
    if module is not None:
        module.set_rng_state(state.cpu(), device)


@contextlib.contextmanager
def fork_rng(device: Any) -> Iterator[None]:
    """Run the block with the CPU and accelerator RNGs restored afterwards."""
    saved = get_rng_state(device)
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            if saved is not None:
                set_rng_state(device, saved)


def default_batch_buckets(device: Any) -> int:
    """`task.num_batch_buckets` when the config leaves it at 0: a fixed set of lengths on the NPU,
    which compiles kernels per input shape; none elsewhere."""
    return NPU_BATCH_BUCKETS if kind(device) == "npu" else 0


def synchronize(device: Any) -> None:
    """Wait for queued kernels, so timings measure work done."""
    module = accelerator(kind(device))
    if module is not None:
        module.synchronize()


def memory_stats(device: Any) -> Dict[str, float]:
    """Peak allocated memory in GiB since the last reset (empty on the CPU)."""
    module = accelerator(kind(device))
    if module is None:
        return {}
    return {"peak_mem_gib": module.max_memory_allocated(device) / 2**30}


def reset_peak_memory(device: Any) -> None:
    """Start a new peak-memory interval."""
    module = accelerator(kind(device))
    if module is not None:
        module.reset_peak_memory_stats(device)


def pin_memory(device: Any) -> Dict[str, Any]:
    """DataLoader keywords that pin host memory for `device`. Before torch 2.9 the loader pins for CUDA
    unless `pin_memory_device` names the device; from 2.9 on it pins for the current accelerator and
    warns that `pin_memory_device` is deprecated."""
    if kind(device) == "cpu":
        return {"pin_memory": False}
    return {"pin_memory": True, **({} if TORCH_VERSION >= (2, 9) else {"pin_memory_device": kind(device)})}


def empty_cache(device: Any) -> None:
    """Hand the accelerator's cached, unused memory back to the driver (nothing to do on the CPU)."""
    module = accelerator(kind(device))
    if module is not None:
        module.empty_cache()


def glibc() -> Optional[Any]:
    """The process's C library when it is glibc (the one with `mallopt`), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_cpu_memory(env: Mapping[str, str] = os.environ, libc: Optional[Any] = None) -> bool:
    """Have glibc keep the memory a CPU training step frees for the next step, instead of handing it back
    to the kernel; True when set.

    By default glibc maps every buffer above 32 MB on its own and unmaps it when freed (a BASE step's
    (B, 12, T, T) attention tensors are 54 MB each), and trims the heap's free top; each new buffer is then
    zero-filled by page faults on first touch, which made a BASE pretraining step on 2 cores 1.6x slower. The
    peak RSS stays about the same, but memory a step freed is not given back until the process ends. Left
    alone when the environment already sets glibc's malloc (`MALLOC_*_` variables, `glibc.malloc.*` in
    `GLIBC_TUNABLES`), with `W2V2_KEEP_FREED_MEMORY=0`, and where the C library is not glibc."""
    libc = _tunable_glibc(env, libc)
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def return_freed_cpu_memory(env: Mapping[str, str] = os.environ, libc: Optional[Any] = None) -> bool:
    """Have glibc hand each buffer of 4 MB or more back to the kernel as soon as it is freed, so that the
    process's RSS follows its live tensors; True when set. For `model.checkpoint_activations` on the CPU:
    its recomputation frees activations to save memory, and glibc's default heap would keep most of what it
    frees (a BASE CTC step: 2.58 GB peak RSS with freed memory kept, 1.93 GB with this). New buffers are
    page-faulted in, which costs time. Left alone in the same cases as `keep_freed_cpu_memory`."""
    libc = _tunable_glibc(env, libc)
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, RETURN_MMAP_THRESHOLD))


def _tunable_glibc(env: Mapping[str, str], libc: Optional[Any]) -> Optional[Any]:
    """glibc (`libc` if given) when the environment leaves its malloc settings to us, else None."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if env.get("W2V2_KEEP_FREED_MEMORY", "1") == "0" or "glibc.malloc." in tunables or any(
            key.startswith("MALLOC_") and key.endswith("_") for key in env):
        return None
    return libc if libc is not None else glibc()
