"""The device layer, with a stand-in for torch_npu so the NPU branches run on the CPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from w2v2 import devices
from w2v2.errors import W2v2Error


class FakeNpu:
    """What the device layer uses of `torch.npu`."""

    def __init__(self) -> None:
        self.matmul = SimpleNamespace(allow_hf32=None)
        self.conv = SimpleNamespace(allow_hf32=None)
        self.selected = None
        self.synced = 0
        self.emptied = 0

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 2

    def set_device(self, index: int) -> None:
        self.selected = index

    def synchronize(self) -> None:
        self.synced += 1

    def max_memory_allocated(self, device) -> int:
        return 3 * 2**30

    def reset_peak_memory_stats(self, device) -> None:
        pass

    def empty_cache(self) -> None:
        self.emptied += 1


@pytest.fixture
def npu(monkeypatch):
    fake = FakeNpu()
    monkeypatch.setattr(devices, "import_npu", lambda: fake)
    return fake


NPU = SimpleNamespace(type="npu", index=0)


def test_cpu_is_the_fallback_here():
    assert devices.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and devices.import_npu() is None:
        assert devices.best_kind() == "cpu"
        with pytest.raises(W2v2Error, match="'cuda' was asked for"):
            devices.pick_device("cuda")


def test_npu_is_preferred_and_selected(npu):
    assert devices.best_kind() == "npu"
    with pytest.raises(W2v2Error, match="local rank 5"):
        devices.pick_device("npu", local_rank=5)
    assert npu.selected is None


def test_hf32_switches_and_memory_on_npu(npu):
    devices.set_reduced_precision_matmul(NPU, True)
    assert npu.matmul.allow_hf32 is True and npu.conv.allow_hf32 is True
    devices.set_reduced_precision_matmul(NPU, False)
    assert npu.matmul.allow_hf32 is False and npu.conv.allow_hf32 is False
    devices.synchronize(NPU)
    assert npu.synced == 1
    assert devices.memory_stats(NPU) == {"peak_mem_gib": 3.0}
    devices.empty_cache(NPU)
    devices.empty_cache(torch.device("cpu"))  # nothing to free on the CPU
    assert npu.emptied == 1
    assert devices.distributed_backend(NPU) == "hccl" and devices.pin_memory(NPU)


def test_backends_and_precision():
    cpu = torch.device("cpu")
    assert devices.distributed_backend(cpu) == "gloo"
    assert devices.distributed_backend(SimpleNamespace(type="cuda")) == "nccl"
    assert devices.memory_stats(cpu) == {} and not devices.pin_memory(cpu)
    assert devices.precision(cpu, bf16=True).autocast_dtype == torch.bfloat16
    assert devices.precision(cpu).autocast_dtype is None
    assert devices.precision(SimpleNamespace(type="cuda"), fp16=True).loss_scaling
    with pytest.raises(W2v2Error, match="cannot both be true"):
        devices.precision(cpu, fp16=True, bf16=True)
    with pytest.raises(W2v2Error, match="needs a GPU or NPU"):
        devices.precision(cpu, fp16=True)
    with pytest.raises(W2v2Error, match="must be one of"):
        devices.pick_device("tpu")


def test_amp_trains_as_fp16_does_and_validates_in_fp32():
    gpu = SimpleNamespace(type="cuda")
    fp16, amp = devices.precision(gpu, fp16=True), devices.precision(gpu, amp=True)
    assert (amp.autocast_dtype, amp.loss_scaling) == (fp16.autocast_dtype, fp16.loss_scaling) == (torch.float16, True)
    assert (fp16.validation_dtype, amp.validation_dtype) == (torch.float16, None)
    with pytest.raises(W2v2Error, match="`common.fp16` and `common.amp` cannot both be true"):
        devices.precision(gpu, fp16=True, amp=True)
    with pytest.raises(W2v2Error, match="`common.bf16` and `common.amp` cannot both be true"):
        devices.precision(gpu, bf16=True, amp=True)
    with pytest.raises(W2v2Error, match="`common.amp` needs a GPU or NPU"):
        devices.precision(torch.device("cpu"), amp=True)
