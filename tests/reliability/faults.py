"""Helpers of the fault-injection tests: corpora with a damaged file, training commands, waiting for a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import soundfile
import torch

from w2v2.interop.safe_load import load_checkpoint_file
from tests.corpus import FIXTURE_CONFIGS

REPO = Path(__file__).parents[2]


def copy_corpus(manifest: Path, target: Path) -> Path:
    """A copy of the corpus whose manifests are in `manifest`, for a test to damage; returns its manifest/."""
    corpus = manifest.parent
    shutil.copytree(corpus, target, ignore=shutil.ignore_patterns("manifest"))
    (target / "manifest").mkdir()
    for path in manifest.iterdir():
        text = path.read_text()
        if path.suffix == ".tsv":
            root, rest = text.split("\n", 1)
            text = root.replace(str(corpus), str(target), 1) + "\n" + rest
        (target / "manifest" / path.name).write_text(text)
    return target / "manifest"


def poison(manifest: Path, split: str, line: int, value: float = float("nan")) -> str:
    """Write `value` into a few samples of the audio on manifest line `line` of `split`; returns its path."""
    lines = (manifest / f"{split}.tsv").read_text().splitlines()
    relative = lines[line].split("\t")[0]
    path = Path(lines[0]) / relative
    audio, rate = soundfile.read(path, dtype="float32")
    audio[100:110] = value
    soundfile.write(path.with_suffix(".wav"), audio, rate, subtype="FLOAT")  # flac cannot hold NaN
    path.unlink()
    lines[line] = lines[line].replace(relative, str(Path(relative).with_suffix(".wav")))
    (manifest / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return str(Path(relative).with_suffix(".wav"))


def command(manifest: Path, run_dir: Path, *overrides: str, config: str = "tiny_pretrain") -> List[str]:
    """The `w2v2-hydra-train` command line of a tiny run in `run_dir`."""
    return [sys.executable, "-m", "w2v2.cli.hydra_train", "--config-dir", str(FIXTURE_CONFIGS), "--config-name",
            config, f"task.data={manifest}", f"hydra.run.dir={run_dir}", *overrides]


def start(args: List[str]) -> subprocess.Popen:
    """The command started in its own process group, one thread (bit-reproducible), output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def records(run_dir: Path) -> List[Dict]:
    """The run's `log.jsonl` records (lines cut short left out)."""
    path = run_dir / "log.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def wait_for_update(process: subprocess.Popen, run_dir: Path, update: int, limit_s: float = 120) -> None:
    """Wait until the run has logged update `update` (its train_inner record)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(r.get("tag") == "train_inner" and r.get("num_updates", 0) >= update for r in records(run_dir)):
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before update {update}: {process.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no update {update} within {limit_s} s")


def updates_of(path: Path) -> int:
    return int(load_checkpoint_file(path)["optimizer_history"][-1]["num_updates"])


def same_weights(a: Path, b: Path) -> Optional[str]:
    """None when the two checkpoints hold bit-identical weights and Adam moments, else the first difference."""
    x, y = load_checkpoint_file(a), load_checkpoint_file(b)
    for key, value in x["model"].items():
        if not torch.equal(value, y["model"][key]):
            return key
    for i, (m, n) in enumerate(zip(x["last_optimizer_state"]["state"].values(),
                                   y["last_optimizer_state"]["state"].values())):
        if not torch.equal(m["exp_avg"], n["exp_avg"]):
            return f"exp_avg {i}"
    return None


