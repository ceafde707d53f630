"""The device layer, its NPU branches run against the stand-in NPU of tests/standin_npu.py."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tests import standin_npu
from w2v2 import devices
from w2v2.errors import W2v2Error

NPU = SimpleNamespace(type="npu", index=0)


@pytest.fixture
def npu(monkeypatch):
    """The stand-in NPU, selected by `device.type == "npu"` (the layer's real dispatch)."""
    fake = standin_npu.FakeNpu()
    monkeypatch.setattr(devices, "import_npu", lambda: fake)
    return fake


@pytest.fixture
def broken_torch_npu(monkeypatch):
    """torch_npu installed, but its import failing as it does without CANN's libraries."""
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())

    def fail(name):
        raise ImportError("libhccl.so: cannot open shared object file")

    monkeypatch.setattr(devices.importlib, "import_module", fail)
    devices._npu_probe.cache_clear()
    yield
    devices._npu_probe.cache_clear()


def test_cpu_is_the_fallback_here():
    assert devices.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and devices.import_npu() is None:
        assert devices.best_kind() == "cpu"
        with pytest.raises(W2v2Error, match="'cuda' was asked for"):
            devices.pick_device("cuda")


def test_a_failed_torch_npu_import_says_why_and_refuses_the_npu(broken_torch_npu, caplog):
    with pytest.raises(W2v2Error, match="'npu' was asked for.*libhccl.so: cannot open.*set_env.sh"):
        devices.pick_device("npu")
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING, logger="w2v2.devices"):
            assert devices.best_kind() == "cpu"
        assert "libhccl.so" in caplog.text  # auto does not fall back to the CPU silently


def test_npu_is_preferred_and_selected(npu):
    assert devices.best_kind() == "npu"
    with pytest.raises(W2v2Error, match="local rank 5"):
        devices.pick_device("npu", local_rank=5)
    assert npu.current == 0 and not npu.compile_modes


def test_npu_compiles_binary_kernels_with_an_operator_cache(npu, tmp_path, monkeypatch):
    monkeypatch.setenv("ACL_OP_COMPILER_CACHE_DIR", str(tmp_path / "ops"))
    devices._static_compile(npu)  # what pick_device("npu") calls after set_device
    assert npu.compile_modes == [{"jit_compile": False}]
    assert npu.options == {"ACL_OP_COMPILER_CACHE_MODE": "enable", "ACL_OP_COMPILER_CACHE_DIR": str(tmp_path / "ops")}
    assert (tmp_path / "ops").is_dir()


@pytest.mark.parametrize("env, mode", [
    ({}, ""), ({"W2V2_MATMUL_PRECISION": "fp32"}, "fp32"), ({"W2V2_MATMUL_PRECISION": "tf32"}, "hf32"),
    ({"ALLOW_HF32": "1"}, "hf32"), ({"ALLOW_FP32": "True"}, "fp32"),
    ({"ALLOW_FP32": "1", "W2V2_MATMUL_PRECISION": "fp32"}, "fp32"),
])
def test_matmul_mode_reads_ours_and_the_forks_variables(env, mode):
    assert devices.matmul_mode(env) == mode


@pytest.mark.parametrize("env, message", [
    ({"ALLOW_HF32": "1", "ALLOW_FP32": "1"}, "cannot both be set"),
    ({"ALLOW_HF32": "1", "W2V2_MATMUL_PRECISION": "fp32"}, "contradicts `ALLOW_HF32`"),
    ({"W2V2_MATMUL_PRECISION": "fp16"}, "must be fp32, hf32 or tf32"),
])
def test_contradicting_precision_variables_are_refused(env, message):
    with pytest.raises(W2v2Error, match=message):
        devices.matmul_mode(env)


def test_hf32_and_fp32_match_the_fork_on_npu(npu):
    npu.conv.allow_hf32 = False
    devices.set_matmul_precision(NPU, "hf32")  # the fork's --hf32: convolutions only, matmuls left alone
    assert (npu.conv.allow_hf32, npu.matmul.allow_hf32) == (True, False)
    npu.matmul.allow_hf32 = True
    devices.set_matmul_precision(NPU, "")
    assert (npu.conv.allow_hf32, npu.matmul.allow_hf32) == (True, True)  # neither: nothing changes
    devices.set_matmul_precision(NPU, "fp32")  # --fp32: both off
    assert (npu.conv.allow_hf32, npu.matmul.allow_hf32) == (False, False)


def test_memory_and_cache_on_npu(npu):
    devices.synchronize(NPU)
    assert npu.synced == 1
    assert devices.memory_stats(NPU) == {"peak_mem_gib": 3.0}
    devices.empty_cache(NPU)
    devices.empty_cache(torch.device("cpu"))  # nothing to free on the CPU
    assert npu.emptied == 1
    assert devices.distributed_backend(NPU) == "hccl"


def test_pinned_memory_names_the_npu_where_torch_needs_it(npu, monkeypatch):
    assert devices.pin_memory(torch.device("cpu")) == {"pin_memory": False}
    monkeypatch.setattr(devices, "TORCH_VERSION", (2, 8))  # pins for CUDA unless told the device
    assert devices.pin_memory(NPU) == {"pin_memory": True, "pin_memory_device": "npu"}
    monkeypatch.setattr(devices, "TORCH_VERSION", (2, 9))  # pins for the current accelerator, warns if told
    assert devices.pin_memory(NPU) == {"pin_memory": True}


def test_each_npu_has_its_own_rng_and_fork_rng_restores_it(npu):
    second = SimpleNamespace(type="npu", index=1)
    assert not torch.equal(devices.get_rng_state(NPU), devices.get_rng_state(second))
    before, cpu_before = devices.get_rng_state(NPU), torch.get_rng_state()
    with devices.fork_rng(NPU):
        torch.rand(3, generator=npu.generators[0])
        torch.rand(3)
    assert torch.equal(devices.get_rng_state(NPU), before) and torch.equal(torch.get_rng_state(), cpu_before)
    torch.rand(3, generator=npu.generators[0])
    devices.set_rng_state(NPU, before)
    assert torch.equal(devices.get_rng_state(NPU), before)
    assert devices.get_rng_state(torch.device("cpu")) is None


def test_saturation_mode_overflow_is_seen_through_the_float_status(npu):
    devices.clear_overflow(NPU)
    assert not devices.overflowed(NPU, 3.0)
    npu.float_status = True  # a kernel saturated: its output is finite, only the status says so
    assert devices.overflowed(NPU, 3.0) and devices.overflowed(torch.device("cpu"), float("inf"))
    devices.clear_overflow(NPU)
    assert not npu.float_status and not devices.overflowed(torch.device("cpu"), 3.0)


def test_inf_nan_mode_npus_check_the_norm_only(monkeypatch):
    fake = standin_npu.FakeNpu(inf_nan_mode=True)  # Ascend 910B and later: torch_npu refuses the flag API there
    monkeypatch.setattr(devices, "import_npu", lambda: fake)
    devices.clear_overflow(NPU)
    assert not devices.overflowed(NPU, 3.0) and devices.overflowed(NPU, float("nan"))


def test_the_npu_loss_scaler_is_torch_npus(npu):
    scaler = devices.grad_scaler(NPU, init_scale=8.0, growth_interval=3, enabled=True)
    assert isinstance(scaler, standin_npu.FakeGradScaler) and scaler.get_growth_interval() == 3
    cpu_scaler = devices.grad_scaler(torch.device("cpu"), 8.0, 3, enabled=False)
    assert type(cpu_scaler) is torch.amp.GradScaler and not cpu_scaler.is_enabled()


def test_our_collectives_send_int64_counts_and_float32_sums():
    with pytest.raises(W2v2Error, match="must be torch.float32, but a tensor of torch.float64"):
        devices.all_reduce_stats(torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.float64))


def test_backends_and_precision():
    cpu = torch.device("cpu")
    assert devices.distributed_backend(cpu) == "gloo"
    assert devices.distributed_backend(SimpleNamespace(type="cuda")) == "nccl"
    assert devices.memory_stats(cpu) == {}
    assert devices.precision(cpu, bf16=True).autocast_dtype == torch.bfloat16
    assert devices.precision(cpu).autocast_dtype is None
    assert devices.precision(SimpleNamespace(type="cuda"), fp16=True).loss_scaling
    assert devices.default_batch_buckets(NPU) == devices.NPU_BATCH_BUCKETS > 0 == devices.default_batch_buckets(cpu)
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


class _RecordingLibc:
    """Stands in for glibc: records mallopt(parameter, value) and accepts it, as glibc returns 1."""

    def __init__(self) -> None:
        self.calls: list = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


def test_keep_freed_cpu_memory_sets_the_mmap_and_trim_thresholds():
    libc = _RecordingLibc()
    assert devices.keep_freed_cpu_memory({}, libc) is True
    # M_MMAP_THRESHOLD (-3) above any buffer of a step, M_TRIM_THRESHOLD (-1) at a C int's largest value
    assert libc.calls == [(-3, 1 << 30), (-1, 2**31 - 1)]


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
                                 {"W2V2_KEEP_FREED_MEMORY": "0"}])
@pytest.mark.parametrize("tune", [devices.keep_freed_cpu_memory, devices.return_freed_cpu_memory])
def test_cpu_malloc_tuning_leaves_a_users_malloc_settings_alone(env, tune):
    libc = _RecordingLibc()
    assert tune(env, libc) is False and libc.calls == []
    assert tune({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, libc) is True


def test_return_freed_cpu_memory_maps_every_buffer_of_4_mb_on_its_own():
    libc = _RecordingLibc()
    assert devices.return_freed_cpu_memory({}, libc) is True
    # setting M_MMAP_THRESHOLD also ends glibc's dynamic threshold, which would rise to 32 MB as buffers are freed
    assert libc.calls == [(-3, 4 << 20)]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("tune", ["keep_freed_cpu_memory", "return_freed_cpu_memory"])
def test_cpu_malloc_tuning_takes_effect_in_a_glibc_process(tune):
    code = ("import os, sys; from w2v2 import devices; "
            "env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}; "
            f"sys.exit(0 if devices.{tune}(env) else 3)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
