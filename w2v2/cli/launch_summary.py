"""Summary of a launch-script run (`test/train_*.sh`): throughput, WER, loss and times from its log.

    python -m w2v2.cli.launch_summary LOG --rank-size N --mode perf|acc [--batch-size B] ...

LOG is the console output of `fairseq-hydra-train`, whose records look like
`[time][train][INFO] - {"epoch": 1, "train_wps": "5524.7", ...}`. The figures are the ones the
Ascend fork's scripts take from that text with grep and awk, so both agree: FPS is the largest
`train_wps` (target letters per second, all devices together) and the WER the last
`valid_best_wer`. The summary is printed and written to `<CaseName>.log` beside LOG, as
`Key = value` lines with the fork's keys.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from w2v2.errors import W2v2Error
from w2v2.fileio import write_text_atomically
from w2v2.train.progress import read_console_records


@dataclass
class LogFigures:
    """What a training log says about a run; texts are the numbers exactly as logged."""

    fps: str  # the largest train_wps
    audio_s_per_s: Optional[str]  # train_audio_s_per_s of the same epoch
    ms_per_update: Optional[float]  # 1000 / train_ups of the same epoch
    utterances_per_update: Optional[float]  # mean train_bsz over the epochs
    best_wer: Optional[str]  # the last valid_best_wer
    last_loss: Optional[str]  # the last training loss (train_inner, else the epoch's train_loss)


def figures(text: str, source: str = "the log") -> LogFigures:
    """The run's figures from the text of its training log; an error if it holds no `train_wps`."""
    epochs: List[Dict[str, str]] = []
    best_wer = last_loss = None
    for tag, values in read_console_records(text):
        if "train_wps" in values:
            epochs.append(values)
        if "valid_best_wer" in values:
            best_wer = values["valid_best_wer"]
        if tag == "train_inner" and "loss" in values:
            last_loss = values["loss"]
        elif tag == "train" and "train_loss" in values:
            last_loss = values["train_loss"]
    if not epochs:
        raise W2v2Error(f"{source} holds no `train_wps` record, so training never finished an epoch or a run; "
                        "read the log for the error that stopped it.")
    fastest = max(epochs, key=lambda values: float(values["train_wps"]))
    ups = float(fastest.get("train_ups", "0"))
    sizes = [float(values["train_bsz"]) for values in epochs if "train_bsz" in values]
    return LogFigures(fps=fastest["train_wps"], audio_s_per_s=fastest.get("train_audio_s_per_s"),
                      ms_per_update=1000.0 / ups if ups > 0 else None,
                      utterances_per_update=sum(sizes) / len(sizes) if sizes else None,
                      best_wer=best_wer, last_loss=last_loss)


def case_name(network: str, rank_size: int, mode: str, batch_size: Optional[int]) -> str:
    """The fork's case name, e.g. `wav2vec2_bs8_1p_perf`; without a batch size `wav2vec2_demo_1p_acc`."""
    batch = f"_bs{batch_size}" if batch_size is not None else ""
    return f"{network}{batch}_{rank_size}p_{mode}"


def summary_entries(args: argparse.Namespace, figs: LogFigures) -> List[Tuple[str, str]]:
    """The `Key = value` pairs of `<CaseName>.log`, in the fork's order plus ours at the end."""
    batch = str(args.batch_size) if args.batch_size is not None else _number(figs.utterances_per_update, 1)
    entries = [("Network", args.network), ("RankSize", str(args.rank_size)), ("BatchSize", batch),
               ("DeviceType", platform.machine()),
               ("CaseName", case_name(args.network, args.rank_size, args.mode, args.batch_size)),
               ("ActualFPS", figs.fps), ("TrainingTime", _number(figs.ms_per_update, 2))]
    if args.mode == "acc":
        entries.append(("TrainAccuracy", figs.best_wer or ""))
    entries += [("ActualLoss", figs.last_loss or ""), ("E2ETrainingTime", str(args.e2e_seconds)),
                ("Device", args.device), ("AudioSecondsPerSecond", figs.audio_s_per_s or "")]
    return entries


def final_lines(args: argparse.Namespace, figs: LogFigures) -> List[str]:
    """The fork's result lines, then what the numbers mean."""
    lines = ["------------------ Final result ------------------",
             f"Final Performance images/sec : {figs.fps}"]
    if args.mode == "acc":
        lines.append(f"Final Train best wer : {figs.best_wer or ''}")
    lines.append(f"E2E Training Duration sec : {args.e2e_seconds}")
    lines.append(f"Units: FPS ('images/sec', ActualFPS) = {figs.fps} target letters per second (letters and "
                 f"word boundaries, all devices together: fairseq's train_wps, the largest over the epochs), "
                 f"i.e. {figs.audio_s_per_s or '?'} seconds of audio per second (train_audio_s_per_s); "
                 f"TrainingTime = {_number(figs.ms_per_update, 2) or '?'} milliseconds per update.")
    if args.mode == "acc":
        lines.append("WER (TrainAccuracy) is the best validation word error rate in percent, greedy CTC "
                     "decoding without a language model (valid_best_wer)."
                     if figs.best_wer else "No `valid_best_wer` in the log: validation never ran.")
    if args.batch_size is None:
        lines.append("BatchSize is the mean number of utterances per update (the recipe batches by audio length).")
    return lines


def write_summary(path: Path, entries: Sequence[Tuple[str, str]]) -> None:
    """`Key = value` lines, written to a temporary file and renamed into place."""
    write_text_atomically(path, "".join(f"{key} = {value}\n" for key, value in entries))


def _number(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m w2v2.cli.launch_summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, metavar="LOG", help="console log of the training run")
    parser.add_argument("--rank-size", type=int, required=True, metavar="N", help="number of training processes")
    parser.add_argument("--mode", choices=("perf", "acc"), required=True, help="performance or accuracy run")
    parser.add_argument("--batch-size", type=int, metavar="B", help="dataset.batch_size (default: measured)")
    parser.add_argument("--network", default="wav2vec2", help="network name in the case name (default: wav2vec2)")
    parser.add_argument("--device", default="", help="device kind the run used (cpu, cuda, npu)")
    parser.add_argument("--e2e-seconds", type=int, default=0, metavar="S", help="wall time of the training command")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="where <CaseName>.log goes (default: LOG's folder)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the summary of LOG and write `<CaseName>.log`; status 2 with a message if LOG is unusable."""
    args = parse_args(argv)
    try:
        if not args.log.is_file():
            raise W2v2Error(f"the training log {args.log} does not exist.")
        figs = figures(args.log.read_text(encoding="utf-8", errors="replace"), str(args.log))
        entries = summary_entries(args, figs)
        target = (args.output_dir or args.log.parent) / f"{dict(entries)['CaseName']}.log"
        write_summary(target, entries)
    except (W2v2Error, OSError) as error:
        print(f"launch_summary: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(final_lines(args, figs) + [f"{key} = {value}" for key, value in entries]
                    + [f"summary written to {target}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
