"""Training-step benchmark: our CTC and pretraining steps against transformers' Wav2Vec2ForCTC /
Wav2Vec2ForPreTraining and fairseq's Wav2VecCtc / Wav2Vec2Model with the same config, weights and batch
(forward + backward + the optimizer step).

    PYTHONPATH=. python benchmarks/bench_step.py --size base --threads 1 2 --rounds 2
    PYTHONPATH=. python benchmarks/bench_step.py --impls ours hf fairseq   # fairseq: ../shared/oracle/setup.sh
    PYTHONPATH=. python benchmarks/bench_step.py --quick          # a small smoke run (no meaningful timing)

Every measurement runs in a fresh process (ours and theirs alternate, the order flipping each round):
`--warmup` untimed steps (with --compile, 3 or more: the second compiled call recompiles for dynamic
shapes), `--steps` timed ones, then one step under torch.utils.flop_counter (on SDPA's math kernel, whose
matmuls it counts; eager even with --compile). Each process also times a square fp32 (or --dtype) matmul,
the peak MFU is measured against. Peak RSS is the process's high-water mark over the timed steps (the
mark is reset after the warm-up).
Results go to benchmarks/results/step-*.json and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def matmul_peak(device: Any, dtype: Any, n: int, reps: int = 5) -> float:
    """Best FLOP/s of an n x n matmul on this device and thread count."""
    import torch

    from w2v2.devices import synchronize

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux `clear_refs` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """VmHWM of this process, or ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One measurement in this process: build, count FLOPs, warm up, time; returns the numbers."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from w2v2.devices import synchronize

    sys.path.insert(0, str(HERE))
    import step_models

    torch.set_num_threads(spec["threads"])
    if spec["keep_freed_memory"]:
        from w2v2.devices import keep_freed_cpu_memory

        spec["keep_freed_memory"] = keep_freed_cpu_memory()  # False where glibc or the environment says no
    device = torch.device(spec["device"])
    dtype = getattr(torch, DTYPES[spec["dtype"]]) if DTYPES[spec["dtype"]] else None
    peak = matmul_peak(device, dtype or torch.float32, spec["matmul_n"])
    ours = step_models.build_ours(spec["size"], spec["task"], spec["options"])
    if spec["impl"] == "hf":
        model = step_models.build_hf(ours, spec["task"], spec["attention"])
    elif spec["impl"] == "fairseq":
        model = step_models.build_fairseq(ours)
    else:
        model = ours
    del ours
    model.to(device)
    batch = step_models.make_batch(spec["batch"], spec["seconds"], spec["mixed"])
    step = step_models.make_step(spec["impl"], spec["task"], model, batch, device, dtype)
    cuda = device.type == "cuda"
    if spec["compile"]:
        model.compile()
    for _ in range(spec["warmup"]):
        step()
    rss_reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(spec["steps"]):
        synchronize(device)
        start = time.perf_counter()
        losses.append(step())
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak_rss = _peak_rss_bytes()
    peak_device = torch.cuda.max_memory_allocated(device) if cuda else None
    # Counted after the timed steps, so that what its kernel allocates stays out of the peak (glibc keeps freed
    # memory, and the high-water mark starts from what the process holds). FlopCounterMode has no formula for
    # SDPA's CPU flash kernels (it counts them as 0 FLOPs): the count runs on the math kernel, whose matmuls it
    # sees, and eagerly.
    with torch.compiler.set_stance("force_eager"), sdpa_kernel([SDPBackend.MATH]), \
            FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    result = {**spec, "times": times, "losses": losses, "flops": flops, "matmul_peak": peak,
              "audio_seconds": batch.seconds, "padded_seconds": batch.padded_seconds,
              "peak_rss": peak_rss, "rss_reset": rss_reset,
              "parameters": sum(p.numel() for p in model.parameters()),
              "trainable": sum(p.numel() for p in model.parameters() if p.grad is not None)}  # got a gradient
    if cuda:
        result["peak_device_memory"] = peak_device
    if spec["profile"]:
        result["profile"] = profile_step(step, spec["profile"])
    return result


def profile_step(step: Any, top: int) -> List[Dict[str, Any]]:
    """The `top` ops of one step by self time, with their share of the step's self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in ranked]


def parse_options(items: List[str]) -> Dict[str, Any]:
    """`--option KEY=JSON` values as a dict; a malformed one stops the run with what was wrong."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not key or not sep:
                raise ValueError("no KEY= before the value")
            options[key] = json.loads(value)
        except ValueError as error:
            raise SystemExit(f"--option {item!r}: expected KEY=JSON, e.g. checkpoint_activations=true ({error}).")
    return options


def run_worker(spec: Dict[str, Any], python: str, script: Path = Path(__file__).resolve()) -> Dict[str, Any]:
    """Run `spec` in a fresh process of `python` (`script --worker`); its last stdout line is the JSON result."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run([python, str(script), "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker {spec['impl']} {spec['task']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Best and median over every timed step of the runs of one case and implementation."""
    times = [t for run in runs for t in run["times"]]
    first = runs[0]
    best, median = min(times), statistics.median(times)
    peak = max(run["matmul_peak"] for run in runs)
    return {"best_s": best, "median_s": median, "audio_s_per_s_best": first["audio_seconds"] / best,
            "audio_s_per_s_median": first["audio_seconds"] / median, "flops": first["flops"],
            "achieved_flops_best": first["flops"] / best, "matmul_peak": peak, "mfu_best": first["flops"] / best / peak,
            "peak_rss_gb": max(run["peak_rss"] for run in runs) / 1e9,
            "peak_rss_gb_each_run": [run["peak_rss"] / 1e9 for run in runs],
            "peak_rss_gb_per_audio_s": max(run["peak_rss"] for run in runs) / 1e9 / first["audio_seconds"],
            "peak_device_memory_gb": max(run.get("peak_device_memory", 0) for run in runs) / 1e9,
            "losses": [run["losses"] for run in runs], "timed_steps": len(times),
            "trainable_parameters": first["trainable"], "profile": first.get("profile")}


def print_table(cases: List[Dict[str, Any]]) -> None:
    """A line per case and implementation: audio-s/s best (median), ours / it (best), GFLOP/step, MFU, peak memory."""
    head = f"{'case':34} {'impl':8} {'audio-s/s':>15} {'ours/it':>7} {'GFLOP':>6} {'MFU':>5} {'peak GB':>7}"
    print(head)
    print("-" * len(head))
    for case in cases:
        ours = case["results"].get("ours")
        key = "peak_device_memory_gb" if case["device"] != "cpu" else "peak_rss_gb"
        for impl, r in case["results"].items():
            ratio = f"{ours['audio_s_per_s_best'] / r['audio_s_per_s_best']:7.2f}" if ours else "-"
            print(f"{case['name']:34} {impl:8} {r['audio_s_per_s_best']:6.2f} ({r['audio_s_per_s_median']:5.2f}) "
                  f"{ratio:>7} {r['flops'] / 1e9:6.0f} {r['mfu_best'] * 100:4.0f}% {r[key]:7.2f}")


def parse_args(argv: List[str]) -> argparse.Namespace:
    """The command line; --quick shrinks everything to a smoke run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("base", "small"), default="base")
    p.add_argument("--tasks", nargs="+", choices=("ctc", "pretrain"), default=["ctc", "pretrain"])
    p.add_argument("--batches", nargs="+", choices=("uniform", "mixed"), default=["uniform", "mixed"])
    p.add_argument("--impls", nargs="+", choices=("ours", "hf", "fairseq", "cached"), default=["ours", "hf"],
                   help="cached: ours with common.feature_cache (CTC only; the cache is filled before timing); "
                        "fairseq runs in --fairseq-python")
    p.add_argument("--fairseq-python", default=os.environ.get("FAIRSEQ_PYTHON", "/tmp/fairseq-oracle/python"),
                   help="an interpreter that imports fairseq (default: $FAIRSEQ_PYTHON, else the oracle's)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch", type=int, default=2, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=15.0, help="longest utterance, seconds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=1, help="processes per case and implementation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="autocast dtype (fp32: none)")
    p.add_argument("--attention", default="sdpa", help="transformers' attn_implementation")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (nn.Module.compile)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="extra model key for our model, e.g. checkpoint_activations=true")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="every implementation's process keeps freed memory as our trainer does on the CPU "
                        "(w2v2.devices.keep_freed_cpu_memory)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile one more step, keep the top N ops")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--output", type=Path, default=None, help="JSON file (default benchmarks/results/step-*.json)")
    p.add_argument("--quick", action="store_true", help="small model, 2 x 1 s, 1 timed step, 1 thread")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.seconds, args.warmup, args.steps, args.rounds = "small", 1.0, 0, 1, 1
        args.threads, args.matmul_n = args.threads[:1], 256
    return args


def main(argv: List[str]) -> None:
    """Run every case, alternating implementations in fresh processes; print and save the results."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    options = parse_options(args.option)
    if "fairseq" in args.impls and not os.access(args.fairseq_python, os.X_OK):
        raise SystemExit(f"--impls fairseq needs an interpreter that imports fairseq; {args.fairseq_python} is not "
                         "one (build it with ../shared/oracle/setup.sh, or pass --fairseq-python).")
    pythons = {impl: args.fairseq_python if impl == "fairseq" else sys.executable for impl in args.impls}
    cases = []
    for threads in args.threads:
        for task in args.tasks:
            for kind in args.batches:
                name = f"{task} {args.size} {args.batch}x{args.seconds:g}s {kind} t{threads}"
                impls = [impl for impl in args.impls if impl != "cached" or task == "ctc"]  # the cache is CTC's
                cases.append({"name": name, "device": args.device, "runs": {impl: [] for impl in impls},
                              "spec": dict(task=task, size=args.size, threads=threads, batch=args.batch,
                                           seconds=args.seconds, mixed=kind == "mixed", warmup=args.warmup,
                                           steps=args.steps, device=args.device, dtype=args.dtype,
                                           attention=args.attention, compile=args.compile, options=options,
                                           profile=args.profile, matmul_n=args.matmul_n,
                                           keep_freed_memory=args.keep_freed_memory)})
    for round_index in range(args.rounds):
        order = args.impls if round_index % 2 == 0 else args.impls[::-1]
        for case in cases:
            for impl in (impl for impl in order if impl in case["runs"]):
                run = run_worker({**case["spec"], "impl": impl}, pythons[impl])
                case["runs"][impl].append(run)
                print(f"round {round_index + 1} {case['name']} {impl}: steps {[round(t, 3) for t in run['times']]} s",
                      file=sys.stderr)
    for case in cases:
        case["results"] = {impl: summarize(runs) for impl, runs in case.pop("runs").items()}
    print_table(cases)
    for case in cases:
        for impl, result in case["results"].items():
            for row in result["profile"] or []:
                print(f"  {case['name']} {impl}: {row['share'] * 100:5.1f}% {row['self_ms']:9.1f} ms "
                      f"x{row['calls']:<5} {row['op']}")
    output = args.output or HERE / "results" / f"step-{args.size}-{args.device}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"argv": argv, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                        "python": platform.python_version()}, "cases": cases}
    sys.path.insert(0, str(ROOT))
    from w2v2.fileio import write_text_atomically

    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(output, json.dumps(report, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
