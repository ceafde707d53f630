"""`w2v2 plot RUN_DIR [--output FILE.png]`: a run's training curves, from its `log.jsonl`, as a PNG.

Four panels against updates: loss (training and validation), WER (fine-tuning) or accuracy
(pretraining), learning rate, and throughput (target tokens and audio seconds per second).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write
from w2v2.train.progress import JSONL_NAME, read_run_log

DEFAULT_NAME = "training.png"


@dataclass
class LogRecords:
    """The records of a `log.jsonl`, keys without their tag's prefix (`valid_loss` -> `loss`)."""

    records: List[Tuple[str, Dict[str, float]]]  # (tag, values)

    def series(self, tag: str, key: str) -> Tuple[List[float], List[float]]:
        """(updates, values) of `key` in the records tagged `tag`."""
        points = [(values["num_updates"], values[key]) for t, values in self.records
                  if t == tag and key in values and "num_updates" in values]
        return [x for x, _ in points], [y for _, y in points]

    def tags(self, prefix: str) -> List[str]:
        """The tags that start with `prefix`, in order of appearance (`valid`, `valid_dev_other`, ...)."""
        return list(dict.fromkeys(t for t, _ in self.records if t.startswith(prefix)))

    def train_tag(self) -> str:
        """`train_inner` (every log_interval updates) when logged, else `train` (once per epoch)."""
        return "train_inner" if "train_inner" in self.tags("train") else "train"

    def has(self, prefix: str, key: str) -> bool:
        """Whether any record whose tag starts with `prefix` holds `key`."""
        return any(t.startswith(prefix) and key in values for t, values in self.records)


def read_log(run_dir: Path) -> LogRecords:
    """The records of `run_dir/log.jsonl`; an error if the file is missing or holds none."""
    records = []
    for tag, values in read_run_log(run_dir):
        prefix = "train_" if tag == "train" else "valid_" if tag.startswith("valid") else ""
        records.append((tag, {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in values.items()}))
    if not records:
        raise W2v2Error(f"{run_dir / JSONL_NAME} holds no training records yet; plot it once training has logged "
                        "some (every common.log_interval updates).")
    return LogRecords(records)


def _draw(ax: Any, series: Tuple[List[float], List[float]], label: Optional[str] = None, **style: Any) -> None:
    """One curve; with markers when it has few points, so that a single point still shows."""
    ax.plot(*series, marker="o" if len(series[0]) <= 20 else None, label=label, **style)


def _loss_panel(ax: Any, log: LogRecords) -> None:
    train = log.train_tag()
    _draw(ax, log.series(train, "loss"), f"train ({train})")
    for tag in log.tags("valid"):
        _draw(ax, log.series(tag, "loss"), tag)
    losses = [values["loss"] for _, values in log.records if "loss" in values]
    if losses and min(losses) > 0 and max(losses) >= 10 * min(losses):
        from matplotlib.ticker import NullFormatter, StrMethodFormatter

        ax.set_yscale("log")  # CTC losses fall by orders of magnitude; plain numbers on the ticks
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("loss (bits)")
    ax.set_title("loss")
    ax.legend(fontsize="small")


def _score_panel(ax: Any, log: LogRecords) -> None:
    """WER when validation logged one (fine-tuning), else contrastive accuracy (pretraining)."""
    if log.has("valid", "wer"):
        for tag in log.tags("valid"):
            _draw(ax, log.series(tag, "wer"), tag)
        ax.set_ylabel("WER (%)")
        ax.set_title("word error rate")
        ax.legend(fontsize="small")
        return
    if not log.has("", "accuracy"):
        ax.set_title("no WER logged (validation was off)")
        return
    train = log.train_tag()
    _draw(ax, log.series(train, "accuracy"), f"train ({train})")
    for tag in log.tags("valid"):
        _draw(ax, log.series(tag, "accuracy"), tag)
    ax.set_ylabel("accuracy")
    ax.set_title("contrastive accuracy")
    ax.legend(fontsize="small")


def _lr_panel(ax: Any, log: LogRecords) -> None:
    _draw(ax, log.series(log.train_tag(), "lr"))
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")


def _throughput_panel(ax: Any, log: LogRecords) -> None:
    """Target tokens/s (letters in fine-tuning, masked frames in pretraining) and audio s/s on a second axis."""
    train = log.train_tag()
    _draw(ax, log.series(train, "wps"), color="tab:blue")
    ax.set_ylabel("target tokens / s (wps)", color="tab:blue")
    audio = ax.twinx()
    _draw(audio, log.series(train, "audio_s_per_s"), color="tab:orange")
    audio.set_ylabel("audio seconds / s", color="tab:orange")
    ax.set_title("throughput")


def plot_run(run_dir: Path, output: Optional[Path] = None) -> Path:
    """Draw the curves of `run_dir` into `output` (default RUN_DIR/training.png), atomically; returns it."""
    log = read_log(run_dir)
    output = output or run_dir / DEFAULT_NAME
    if not output.parent.is_dir():
        raise W2v2Error(f"--output {output}: the folder {output.parent} does not exist.")
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise W2v2Error("`w2v2 plot` needs matplotlib: run `pip install 'w2v2[plot]'` "
                        "(or `pip install matplotlib`).") from error
    figure = Figure(figsize=(12, 8), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    for panel, ax in zip((_loss_panel, _score_panel, _lr_panel, _throughput_panel), axes.flat):
        panel(ax, log)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("updates")
    updates = max((values.get("num_updates", 0) for _, values in log.records), default=0)
    figure.suptitle(f"{'/'.join(run_dir.resolve().parts[-2:])}: {int(updates)} updates")
    with atomic_write(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    return output


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `plot`."""
    parser = subparsers.add_parser("plot", help="PNG of a run's loss, WER/accuracy, learning rate and throughput")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run folder holding log.jsonl")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE.png",
                        help=f"image to write (default: RUN_DIR/{DEFAULT_NAME})")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print(f"wrote {plot_run(args.run_dir, args.output)}")
    return 0
