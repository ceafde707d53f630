"""Whole-loop benchmark: `fairseq-hydra-train` on the bundled corpus for a fixed number of updates, validation
and checkpoint saving off; reports letters/s, audio-s/s, the padding fraction and the share of time the loop
waited for data.

    PYTHONPATH=. python benchmarks/bench_train.py                       # demo_ctc, 200 updates
    PYTHONPATH=. python benchmarks/bench_train.py --recipe demo_pretrain --updates 100
    PYTHONPATH=. python benchmarks/bench_train.py --quick               # a smoke run

Fine-tuning needs a pretrained model: a short demo_pretrain run (--pretrain-updates) makes one in the
work folder unless `--w2v-path` names one. Manifests are prepared as `w2v2 demo` does (on a WAV copy of the
corpus). The numbers come from the run's own `train_inner` records (every --log-interval updates), the
first one left out as warm-up; `train_wall` there excludes epoch boundaries, so the whole stage's wall time
is reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from w2v2.cli.demo import REPO_CORPUS  # noqa: E402
from w2v2.cli.hydra_train import main as hydra_train  # noqa: E402
from w2v2.errors import W2v2Error, report  # noqa: E402
from w2v2.fileio import write_text_atomically  # noqa: E402
from w2v2.train.progress import read_run_log  # noqa: E402


def train(recipe: str, overrides: List[str]) -> float:
    """Run one recipe through the public entry point; its wall seconds."""
    start = time.time()
    if hydra_train(["--config-name", recipe, *overrides]) != 0:
        raise W2v2Error(f"the {recipe} run failed; its error is printed above.")
    return time.time() - start


def loop_numbers(run_dir: Path, skip: int) -> Dict[str, Any]:
    """Throughput, padding and data wait over the run's train_inner records after the first `skip`."""
    records = [values for tag, values in read_run_log(run_dir) if tag == "train_inner"][skip:]
    if not records:
        raise W2v2Error(f"{run_dir} logged no train_inner records after the first {skip}; "
                        "run more updates or lower --log-interval.")
    wall = sum(r["train_wall"] for r in records)
    letters = sum(r["wps"] * r["train_wall"] for r in records)
    audio = sum(r["audio_s_per_s"] * r["train_wall"] for r in records)
    return {"records": len(records),
            "train_wall_s": wall, "letters_per_s": letters / wall, "audio_s_per_s": audio / wall,
            "padding_fraction": sum(r.get("padding_fraction", 0.0) * r["train_wall"] for r in records) / wall,
            "data_wait_share": sum(r.get("data_wait", 0.0) for r in records) / wall}


def parse_args(argv: List[str]) -> argparse.Namespace:
    """The command line; --quick makes everything tiny."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="demo_ctc", help="demo_ctc or demo_pretrain (or any recipe name)")
    p.add_argument("--corpus", type=Path, default=REPO_CORPUS)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--pretrain-updates", type=int, default=20, help="for the pretrained model fine-tuning needs")
    p.add_argument("--w2v-path", type=Path, default=None, help="a pretrained checkpoint to fine-tune instead")
    p.add_argument("--output", type=Path, default=None, help="JSON file (default benchmarks/results/train-*.json)")
    p.add_argument("--quick", action="store_true", help="6 updates, log every 2")
    p.add_argument("overrides", nargs="*", help="more hydra overrides, e.g. model.checkpoint_activations=true")
    args = p.parse_args(argv)
    if args.quick:
        args.updates, args.log_interval, args.pretrain_updates = 6, 2, 2
    return args


def main(argv: List[str]) -> None:
    """Prepare, (pre)train, measure; print and save the numbers."""
    from w2v2.data.librispeech import decoded_copy, prepare_librispeech

    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="w2v2-bench-train-"))
    work = work.resolve()
    manifest = work / "manifest"
    if not (manifest / "train.tsv").is_file():
        prepare_librispeech(decoded_copy(args.corpus, work / "corpus"), dest=manifest)  # as the demo does
    overrides = [f"task.data={manifest}"]
    if args.recipe != "demo_pretrain":
        w2v_path = args.w2v_path
        if w2v_path is None:
            pretrain = work / "pretrain"
            w2v_path = pretrain / "checkpoints" / "checkpoint_last.pt"
            if not w2v_path.is_file():
                train("demo_pretrain", overrides + [f"hydra.run.dir={pretrain}",
                                                    f"optimization.max_update={args.pretrain_updates}",
                                                    "dataset.disable_validation=true"])
        overrides.append(f"model.w2v_path={w2v_path.resolve()}")
    run_dir = work / f"bench-{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    seconds = train(args.recipe, overrides + [
        f"hydra.run.dir={run_dir}", f"optimization.max_update={args.updates}", "dataset.disable_validation=true",
        "checkpoint.no_save=true", f"common.log_interval={args.log_interval}", "common.log_format=json",
        *args.overrides])
    numbers = loop_numbers(run_dir, skip=1)
    summary = {"argv": argv, "recipe": args.recipe, "updates": args.updates, "stage_wall_s": seconds,
              "run_dir": str(run_dir), **numbers}
    print(f"{args.recipe}: {numbers['letters_per_s']:.0f} letters/s, {numbers['audio_s_per_s']:.1f} audio-s/s, "
          f"padding {numbers['padding_fraction'] * 100:.1f} %, data wait {numbers['data_wait_share'] * 100:.1f} % "
          f"of {numbers['train_wall_s']:.0f} s logged ({numbers['records']} records after warm-up); "
          f"stage wall {seconds:.0f} s for {args.updates} updates")
    output = args.output or HERE / "results" / f"train-{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(output, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except W2v2Error as error:
        sys.exit(report("bench_train.py", error))
