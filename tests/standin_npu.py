"""A stand-in Ascend NPU on the CPU that enforces what torch_npu and HCCL enforce, not just their names.

`install(target)` makes the device layer treat every device as an NPU driven by a `FakeNpu` (a
`torch.npu` look-alike) and makes `torch.distributed` refuse what HCCL refuses, so that the NPU
branches of `w2v2.devices` and everything above them run here:

- collectives: all-reduce and all-gather take only the dtypes every Ascend training product takes
  (CANN's HcclAllReduce: int8, int32, int64, float16, float32 on the Atlas training series); float64
  is refused as HCCL refuses it;
- saturation mode: `saturate(parameter, npu)` turns the parameter's gradient into finite extremes (65504,
  float16's largest) and sets the float status register, as an overflowing kernel does on an Atlas
  training NPU; nothing becomes inf or nan;
- RNG: one generator per device index, with `get_rng_state(device)` / `set_rng_state(state, device)`;
- torch_npu's GradScaler signature (no device argument) and its `load_state_dict`, which needs `dynamic`;
- the settings `pick_device` makes (compile mode, options) and the HF32 switches, with torch_npu's
  defaults (convolutions HF32 on, matmuls off).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from w2v2 import devices

HCCL_DTYPES = (torch.int8, torch.int32, torch.int64, torch.float16, torch.float32)
SATURATED = 65504.0  # float16's largest finite value, which saturation mode writes instead of inf


class HcclDtypeError(RuntimeError):
    """What HCCL would fail with."""


class FakeGradScaler(torch.amp.GradScaler):
    """torch_npu.npu.amp.GradScaler's interface: no device argument, a `dynamic` state entry."""

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, dynamic: bool = True, enabled: bool = True) -> None:
        super().__init__("cpu", init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                         growth_interval=growth_interval, enabled=enabled)
        self.dynamic = dynamic

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if state:
            state["dynamic"] = self.dynamic
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.dynamic = state_dict["dynamic"]  # torch_npu reads it unconditionally


class FakeNpu:
    """What the device layer uses of `torch.npu`, on CPU memory."""

    def __init__(self, count: int = 2, inf_nan_mode: bool = False) -> None:
        self.count, self.current = count, 0
        self.matmul = SimpleNamespace(allow_hf32=False)  # torch_npu's defaults
        self.conv = SimpleNamespace(allow_hf32=True)
        self.utils = SimpleNamespace(is_support_inf_nan=lambda: inf_nan_mode)
        self.amp = SimpleNamespace(GradScaler=FakeGradScaler)
        self.compile_modes: List[Dict[str, bool]] = []
        self.options: Dict[str, str] = {}
        self.float_status = False
        self.synced = self.emptied = 0
        self.generators = [torch.Generator().manual_seed(1000 + index) for index in range(count)]

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def set_device(self, index: int) -> None:
        self.current = index

    def set_compile_mode(self, jit_compile: bool) -> None:
        self.compile_modes.append({"jit_compile": jit_compile})

    def set_option(self, options: Dict[str, str]) -> None:
        self.options.update(options)

    def _generator(self, device: Any) -> torch.Generator:
        index = device if isinstance(device, int) else getattr(device, "index", None)
        return self.generators[self.current if index is None else index]

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return self._generator(device).get_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        self._generator(device).set_state(state)

    def get_npu_overflow_flag(self) -> bool:
        if self.utils.is_support_inf_nan():
            raise RuntimeError("Unsupported api when soc_version >= Ascend910B1, please use npu_check_overflow")
        return self.float_status

    def clear_npu_overflow_flag(self) -> None:
        self.float_status = False

    def synchronize(self) -> None:
        self.synced += 1

    def max_memory_allocated(self, device: Any) -> int:
        return 3 * 2**30

    def reset_peak_memory_stats(self, device: Any) -> None:
        pass

    def empty_cache(self) -> None:
        self.emptied += 1


def _checked(collective: Any) -> Any:
    """`collective` refusing tensors of a dtype HCCL cannot send."""

    def run(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in args if torch.is_tensor(a)] + [t for a in args if isinstance(a, list) for t in a]
        for tensor in tensors:
            if tensor.dtype not in HCCL_DTYPES:
                raise HcclDtypeError(f"HCCL does not support {tensor.dtype} in {collective.__name__}")
        return collective(*args, **kwargs)

    run.__name__ = collective.__name__
    return run


def install(target: Any, npu: Optional[FakeNpu] = None) -> FakeNpu:
    """Make every device an NPU driven by `npu` and the collectives HCCL's; `target` is a pytest
    monkeypatch (undone after the test) or None in a spawned worker (for its whole life)."""
    npu = npu or FakeNpu()
    patches = [(devices, "kind", lambda device: "npu"), (devices, "import_npu", lambda: npu),
               (dist, "all_reduce", _checked(dist.all_reduce)), (dist, "all_gather", _checked(dist.all_gather))]
    for owner, name, value in patches:
        if target is None:
            setattr(owner, name, value)
        else:
            target.setattr(owner, name, value)
    return npu


def saturate(parameter: torch.nn.Parameter, npu: FakeNpu) -> Any:
    """An overflow in saturation mode: `parameter`'s gradient becomes ±65504 (finite) and the float
    status register is set. Returns the hook handle; remove it to end the overflow."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        npu.float_status = True
        return torch.where(grad < 0, -SATURATED, SATURATED)

    return parameter.register_hook(hook)
