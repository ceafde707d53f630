"""Where a training step's memory peaks: RSS sampled every 5 ms through forward, backward and optimizer of each
step, the most the step's own tensors add up to (torch.profiler's allocation records), and glibc's heap at the
RSS peak (`mallinfo2`: the free chunks it keeps are the gap between the two), ours against transformers, each in a
fresh process (the same models and batch as bench_step.py).

    PYTHONPATH=. python benchmarks/bench_memory.py --tasks ctc --impls ours hf --steps 4 [--malloc return-freed]

The RSS peak is what the machine must have, and it is more than the tensors alive at any moment: glibc keeps
freed memory in the heap for the next allocation, so the next step's forward starts from the last step's high
level, and buffers above its mmap threshold (up to 32 MB) come on top of that. How much more varies from run
to run by ~0.2 GB (it depends on the order the two threads free in). `--malloc` sets glibc the same way for
every implementation: `default` leaves it alone; `return-freed` maps every buffer of 4 MB or more on its own,
so it goes back to the system when freed and the peak follows the live tensors (slower: each new buffer is
faulted in; `w2v2.devices.return_freed_cpu_memory`, which w2v2's CPU training sets with
`model.checkpoint_activations`); `keep-freed` is what w2v2's CPU training sets otherwise
(`w2v2.devices.keep_freed_cpu_memory`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_step import parse_options, run_worker  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33), in its field order."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_reader() -> Optional[Callable[[], Dict[str, float]]]:
    """A function giving glibc's heap in GB (its size, what is in use, the free chunks it keeps, the buffers
    mapped on their own), or None where the C library has no `mallinfo2`."""
    from w2v2 import devices

    libc = devices.glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2

    def read() -> Dict[str, float]:
        info = libc.mallinfo2()
        return {"heap": info.arena / 1e9, "in_use": info.uordblks / 1e9, "free": info.fordblks / 1e9,
                "mapped": info.hblkhd / 1e9}

    return read


def _step_tensor_peak(step: Any) -> int:
    """Bytes the step's own allocations reach at their highest (freed ones subtracted), from the profiler's
    allocation records ("Total Allocated" in its trace)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    return max((e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"), default=0)


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Build, warm up one step, then sample RSS over `steps` steps split at backward's start and end."""
    import torch

    import step_models

    torch.set_num_threads(spec["threads"])
    if spec["malloc"] != "default":
        from w2v2 import devices

        tune = devices.keep_freed_cpu_memory if spec["malloc"] == "keep-freed" else devices.return_freed_cpu_memory
        if not tune():
            raise SystemExit(f"--malloc {spec['malloc']}: glibc or the environment said no (see {tune.__name__})")
    ours = step_models.build_ours(spec["size"], spec["task"], spec["options"])
    model = step_models.build_hf(ours, spec["task"], "sdpa") if spec["impl"] == "hf" else ours
    del ours
    batch = step_models.make_batch(spec["batch"], spec["seconds"], mixed=spec.get("batches", "mixed") == "mixed")
    step = step_models.make_step(spec["impl"], spec["task"], model, batch, torch.device("cpu"), None)
    marks: List[float] = []
    backward = torch.Tensor.backward

    def timed_backward(self, *args, **kwargs):  # marks the forward/backward and backward/optimizer borders
        marks.append(time.perf_counter())
        backward(self, *args, **kwargs)
        marks.append(time.perf_counter())

    torch.Tensor.backward = timed_backward
    step()
    samples, done = [], threading.Event()
    heap, at_peak = _heap_reader(), {}

    def sample() -> None:
        highest = 0
        while not done.is_set():
            rss = _rss()
            samples.append((time.perf_counter(), rss))
            if heap is not None and rss > highest:  # glibc's heap at the highest RSS seen so far
                highest = rss
                at_peak.update(heap())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    phases = []
    for _ in range(spec["steps"]):
        marks.clear()
        start = time.perf_counter()
        step()
        end = time.perf_counter()
        bounds = [start, marks[0], marks[1], end]
        phases.append([max((r for t, r in samples if lo <= t <= hi), default=float("nan")) / 1e9
                       for lo, hi in zip(bounds, bounds[1:])])
    done.set()
    sampler.join()
    torch.Tensor.backward = backward
    return {**spec, "phases_gb": phases, "peak_gb": max(gb for p in phases for gb in p if gb == gb),
            "heap_at_peak_gb": at_peak or None, "step_tensor_peak_gb": _step_tensor_peak(step) / 1e9,
            "audio_seconds": batch.seconds}


def main(argv: List[str]) -> None:
    """One fresh process per task and implementation; prints the peak per phase and step, writes JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("base", "small"), default="base")
    p.add_argument("--tasks", nargs="+", choices=("ctc", "pretrain"), default=["ctc"])
    p.add_argument("--impls", nargs="+", choices=("ours", "hf"), default=["ours", "hf"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batches", choices=("mixed", "uniform"), default="mixed",
                   help="mixed: lengths from --seconds down to 60 %% of it, padded (bench_step.py's); uniform: no padding")
    p.add_argument("--malloc", choices=("default", "return-freed", "keep-freed"), default="default",
                   help="how glibc treats freed memory, the same in every process (see the module's docstring)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="extra model key for our model, e.g. checkpoint_activations=true")
    p.add_argument("--output", type=Path, default=HERE / "results" / "memory.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    options = parse_options(args.option)
    runs = []
    for task in args.tasks:
        for impl in args.impls:
            spec = dict(task=task, impl=impl, size=args.size, threads=args.threads, batch=args.batch,
                        seconds=args.seconds, batches=args.batches, steps=args.steps, malloc=args.malloc,
                        options=options if impl == "ours" else {})
            run = run_worker(spec, sys.executable, script=Path(__file__).resolve())
            runs.append(run)
            steps = "  ".join("/".join(f"{gb:.2f}" for gb in phase) for phase in run["phases_gb"])
            heap = run["heap_at_peak_gb"]
            kept = f"  glibc's free chunks at the peak {heap['free']:.2f} GB" if heap else ""
            print(f"{task} {args.size} {args.batches} {impl:4}  peak RSS {run['peak_gb']:.2f} GB  step's tensors at most "
                  f"{run['step_tensor_peak_gb']:.2f} GB{kept}  forward/backward/optimizer per step: {steps}")
    sys.path.insert(0, str(HERE.parent))
    from w2v2.fileio import write_text_atomically

    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.output, json.dumps({"argv": argv, "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
