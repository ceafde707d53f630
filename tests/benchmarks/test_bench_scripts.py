"""The benchmark scripts run end to end in their --quick modes (their timings are never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


def _launch(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _run(script: str, *args: str) -> str:
    done = _launch(script, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_step_quick_compares_the_same_model_in_both_toolkits(tmp_path):
    output = tmp_path / "step.json"
    printed = _run("bench_step.py", "--quick", "--tasks", "ctc", "--output", str(output))
    report = json.loads(output.read_text())
    uniform, mixed = report["cases"]
    for case in (uniform, mixed):
        ours, hf = case["results"]["ours"], case["results"]["hf"]
        # the same config and weights: the same parameters trained (the CNN frozen in both)
        assert ours["trainable_parameters"] == hf["trainable_parameters"]
        for result in (ours, hf):
            assert result["timed_steps"] == 1 and result["best_s"] > 0 and 0 < result["mfu_best"]
            assert result["peak_rss_gb"] > 0.1
        assert case["name"] in printed and "ours/it" in printed
    # the same work on a full batch; on a padded one our layers skip the padded frames, which transformers'
    # compute (the quick batch's second utterance is 0.6 s of 1 s)
    flops = [(case["results"]["ours"]["flops"], case["results"]["hf"]["flops"]) for case in (uniform, mixed)]
    assert abs(flops[0][0] - flops[0][1]) / flops[0][1] < 0.02
    assert flops[1][0] < 0.95 * flops[1][1]


@pytest.mark.slow
def test_bench_step_quick_runs_every_case(tmp_path):
    output = tmp_path / "step.json"
    _run("bench_step.py", "--quick", "--profile", "5", "--output", str(output))
    cases = json.loads(output.read_text())["cases"]
    assert len(cases) == 4 and all(len(c["results"]["ours"]["profile"]) == 5 for c in cases)


@pytest.mark.slow
def test_bench_train_quick_reports_the_loop_numbers(tmp_path):
    output = tmp_path / "train.json"
    _run("bench_train.py", "--quick", "--workdir", str(tmp_path / "work"), "--output", str(output))
    report = json.loads(output.read_text())
    assert report["letters_per_s"] > 0 and report["audio_s_per_s"] > 0
    assert 0 <= report["padding_fraction"] < 1 and 0 <= report["data_wait_share"] < 1


@pytest.mark.parametrize("malloc", ["default", "return-freed", "keep-freed"])
def test_bench_memory_reports_each_phase_of_each_step(tmp_path, malloc):
    output = tmp_path / "memory.json"
    printed = _run("bench_memory.py", "--size", "small", "--seconds", "1", "--steps", "2", "--impls", "ours",
                   "--malloc", malloc, "--output", str(output))
    (run,) = json.loads(output.read_text())["runs"]
    assert run["malloc"] == malloc
    assert len(run["phases_gb"]) == 2 and all(len(phase) == 3 for phase in run["phases_gb"])
    # the step's own tensors are part of what the process holds
    assert 0 < run["step_tensor_peak_gb"] < run["peak_gb"]
    assert "peak RSS" in printed
    heap = run["heap_at_peak_gb"]  # glibc's heap at the RSS peak (this machine's C library is glibc >= 2.33)
    assert 0 < heap["in_use"] <= heap["heap"] and heap["free"] >= 0 and heap["heap"] + heap["mapped"] < 2 * run["peak_gb"]
    assert "free chunks at the peak" in printed


def test_bench_memory_option_reaches_our_model(tmp_path):
    peaks = {}
    for checkpointed in ("false", "true"):
        output = tmp_path / f"memory-{checkpointed}.json"
        _run("bench_memory.py", "--size", "small", "--seconds", "15", "--steps", "1", "--impls", "ours",
             "--option", f"checkpoint_activations={checkpointed}", "--output", str(output))
        (run,) = json.loads(output.read_text())["runs"]
        assert run["options"] == {"checkpoint_activations": checkpointed == "true"}
        peaks[checkpointed] = run["step_tensor_peak_gb"]
    # recomputing each layer in the backward keeps only the layers' inputs
    assert peaks["true"] < peaks["false"]


def test_bench_memory_batches_reach_the_step(tmp_path):
    peaks = {}
    for batches in ("mixed", "uniform"):
        output = tmp_path / f"memory-{batches}.json"
        _run("bench_memory.py", "--size", "small", "--seconds", "15", "--steps", "1", "--impls", "ours",
             "--batches", batches, "--output", str(output))
        (run,) = json.loads(output.read_text())["runs"]
        assert run["batches"] == batches
        peaks[batches] = run["step_tensor_peak_gb"]
    # the mixed batch is 80 % audio and 20 % padding, which our layers skip
    assert peaks["mixed"] < peaks["uniform"]


@pytest.mark.parametrize("script", ["bench_step.py", "bench_memory.py"])
def test_a_malformed_option_stops_the_benchmark_with_what_was_wrong(script):
    done = _launch(script, "--option", "checkpoint_activations")
    assert done.returncode != 0
    assert "--option 'checkpoint_activations': expected KEY=JSON" in done.stderr and "Traceback" not in done.stderr
