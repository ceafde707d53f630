"""Training logs: fairseq's metric names and line format, plus JSON lines and TensorBoard; and the
readers of both, for the tools that summarise runs.

Lines look like fairseq's under Hydra (`[time][train_inner][INFO] - {"epoch": 1, ...}` with values
as strings), so the parsers users already have keep working; `log.jsonl` beside them holds the
same records with numbers, for plotting.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from w2v2.errors import W2v2Error
from w2v2.fileio import write_text_atomically

# Decimal places fairseq rounds each metric to (None: printed as it is).
ROUNDS = {"loss": 3, "nll_loss": 3, "uer": 3, "wer": 3, "raw_wer": 3, "accuracy": 5, "wps": 1, "ups": 2,
          "wpb": 1, "bsz": 1, "gnorm": 3, "loss_scale": 4, "train_wall": 0, "wall": 0, "prob_perplexity": 3,
          "code_perplexity": 3, "temp": 5, "audio_s_per_s": 1, "padding_fraction": 4, "data_wait": 3,
          "peak_mem_gib": 2, "best_wer": 3, "best_loss": 3, "best_accuracy": 5}
AVERAGED = ("prob_perplexity", "code_perplexity", "temp", "padding_fraction")
JSONL_NAME = "log.jsonl"
# A console record as `setup_console_logging` and `RunLog` print it with the json log format.
CONSOLE_RECORD = re.compile(r"^\[[^\]]*\]\[(?P<tag>[^\]]+)\]\[[A-Z]+\] - (?P<body>\{.*\})\s*$")


def derive(sums: Dict[str, float], seconds: float, updates: int) -> Dict[str, float]:
    """fairseq's metrics from summed logging outputs of `updates` updates that took `seconds`."""
    sample_size, ntokens = sums.get("sample_size", 0.0), sums.get("ntokens", 0.0)
    out: Dict[str, float] = {}
    if sample_size:
        out["loss"] = sums.get("loss", 0.0) / sample_size / math.log(2)
        if ntokens and sample_size != ntokens:
            out["nll_loss"] = sums.get("loss", 0.0) / ntokens / math.log(2)
    if sums.get("c_total"):
        out["uer"] = sums.get("c_errors", 0.0) * 100.0 / sums["c_total"]
    if sums.get("w_total"):
        out["wer"] = sums.get("w_errors", 0.0) * 100.0 / sums["w_total"]
        out["raw_wer"] = sums.get("wv_errors", 0.0) * 100.0 / sums["w_total"]
    if sums.get("count"):
        out["accuracy"] = sums.get("correct", 0.0) / sums["count"]
    batches = sums.get("batches", 0.0)
    for key in AVERAGED:
        if key in sums and batches:
            out[key] = sums[key] / batches
    out["ntokens"] = ntokens
    if seconds > 0:
        out["wps"] = ntokens / seconds
        out["audio_s_per_s"] = sums.get("audio_seconds", 0.0) / seconds
        if updates:
            out["ups"] = updates / seconds
    if updates:
        out["wpb"] = ntokens / updates
        out["bsz"] = sums.get("nsentences", 0.0) / updates
    return out


def fairseq_value(key: str, value: Any) -> Any:
    """A number as fairseq prints it: rounded to the metric's digits, then `{:g}` text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    digits = ROUNDS.get(key.split("_", 1)[1] if key.startswith(("train_", "valid_")) else key)
    return "{:g}".format(round(value, digits) if digits is not None else value)


class RunLog:
    """Writes each record to the console/log file (fairseq style), `log.jsonl` and TensorBoard."""

    def __init__(self, run_dir: Path, log_format: Optional[str] = None, tensorboard_dir: Optional[str] = None,
                 enabled: bool = True) -> None:
        self.enabled, self.log_format = enabled, log_format
        self.jsonl = (run_dir / JSONL_NAME).open("a", encoding="utf-8") if enabled else None
        self.writers: Dict[str, Any] = {}
        self.tensorboard_dir = tensorboard_dir if enabled else None
        if self.tensorboard_dir:
            _summary_writer_class()  # fail now, not at the first record
        self.start = time.time()

    def keep_records_up_to(self, update: int) -> None:
        """Drop the `log.jsonl` records of updates after `update`: a resumed run redoes those updates and
        logs them again (records without an update count, and lines cut short by a kill, are kept)."""
        if not self.enabled:
            return
        path = Path(self.jsonl.name)
        self.jsonl.close()
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _record_update(line) <= update]
        if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
            logging.getLogger(__name__).info("%s: dropped %d records of updates after %d, which this run redoes",
                                             path, len(lines) - len(kept), update)
            write_text_atomically(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept))
        self.jsonl = path.open("a", encoding="utf-8")

    def record(self, tag: str, values: Dict[str, Any], step: int) -> None:
        """Log one record (`tag` is train_inner, train or valid) at update `step`."""
        if not self.enabled:
            return
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.jsonl.write(json.dumps({"tag": tag, "time": round(time.time() - self.start, 3), **numbers}) + "\n")
        self.jsonl.flush()
        logging.getLogger(tag).info(self._line(tag, values))
        if self.tensorboard_dir:
            self._tensorboard(tag, numbers, step)

    def _line(self, tag: str, values: Dict[str, Any]) -> str:
        shown = {k: v if k in ("epoch", "update") else fairseq_value(k, v) for k, v in values.items()}
        if self.log_format in ("simple", "none", "tqdm"):
            return " | ".join(f"{k} {v}" for k, v in shown.items())
        return json.dumps(shown)

    def _tensorboard(self, tag: str, numbers: Dict[str, float], step: int) -> None:
        if tag not in self.writers:
            self.writers[tag] = _summary_writer_class()(str(Path(self.tensorboard_dir) / tag))
        for key, value in numbers.items():
            if key not in ("epoch", "num_updates"):
                self.writers[tag].add_scalar(key.split("_", 1)[1] if key.startswith(tag + "_") else key, value, step)
        self.writers[tag].flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        for writer in self.writers.values():
            writer.close()


def _record_update(line: str) -> float:
    """The update count of one `log.jsonl` line (its `num_updates`, `train_num_updates`, `valid_num_updates`,
    ...), or -inf when it has none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return -math.inf
    counts = [v for k, v in record.items() if k.endswith("num_updates") and isinstance(v, (int, float))] \
        if isinstance(record, dict) else []
    return float(counts[0]) if counts else -math.inf


def read_run_log(run_dir: Path) -> List[Tuple[str, Dict[str, float]]]:
    """(tag, numbers) of every record in `run_dir/log.jsonl`, in order, keys as `RunLog` wrote them.
    Lines that are not JSON records are skipped: a run that is still going may have written half a line."""
    path = run_dir / JSONL_NAME
    if not path.is_file():
        raise W2v2Error(f"{run_dir} has no {JSONL_NAME}: the folder must be the hydra.run.dir of a training run.")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("tag"), str):
            tag = record.pop("tag")
            records.append((tag, {k: v for k, v in record.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}))
    return records


def read_console_records(text: str) -> Iterator[Tuple[str, Dict[str, str]]]:
    """(tag, values as printed) of every JSON record line in console output or `hydra_train.log`, in
    order; other lines (progress bars, messages, records cut short) are skipped."""
    for line in text.splitlines():
        match = CONSOLE_RECORD.match(line)
        if match is None:
            continue
        try:
            values = json.loads(match["body"])
        except json.JSONDecodeError:
            continue
        if isinstance(values, dict):
            yield match["tag"], {key: str(value) for key, value in values.items()}


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise W2v2Error("`common.tensorboard_logdir` is set, but the tensorboard package is not installed; "
                        "run `pip install tensorboard` or leave it null.") from error
    return SummaryWriter


def setup_console_logging(log_file: Optional[Path] = None, rank: int = 0, copy_file: Optional[str] = None) -> None:
    """fairseq's Hydra line format on stderr (rank 0 only) and in `log_file`; `copy_file`
    (`common.log_file`) also gets every message of rank 0, as fairseq's own FileHandler writes them:
    the message alone, without time, logger or level."""
    root = logging.getLogger()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None and rank == 0:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if copy_file is not None and rank == 0:
        try:
            root.addHandler(logging.FileHandler(copy_file))  # python's default format: the message alone
        except OSError as error:
            raise W2v2Error(f"`common.log_file` {copy_file} cannot be opened for writing: {error.strerror}.") from error
