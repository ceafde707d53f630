"""`w2v2-hydra-train` (alias `fairseq-hydra-train`): train from a fairseq-format YAML config.

    w2v2-hydra-train --config-dir DIR --config-name NAME [key=value | +key=value | ~key ...]

One process per device: under `torchrun` each process takes its rank from the environment; without
it, `distributed_training.distributed_world_size=N` starts N local processes through torchrun's
Python API (torch.distributed.launcher), as fairseq users expect.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from w2v2.errors import RunFault, W2v2Error, debugging, paragraph, report
from w2v2.fileio import write_text_atomically
from w2v2.train.config_loading import LoadedConfig, load_train_config
from w2v2.train.interrupts import STOP_SIGNALS, TrainingInterrupted
from w2v2.train.progress import setup_console_logging

logger = logging.getLogger("w2v2.train")

# How often torchrun's launcher looks at its workers, and how long a rank that saw another rank fail waits
# before it exits: the launcher reports one failed rank per look (an arbitrary one when several have exited),
# so the survivor must outlive a few looks for the launcher to name the rank that died first, and how.
MONITOR_INTERVAL_S = 1
SURVIVOR_GRACE_S = 3 * MONITOR_INTERVAL_S

# Config values that name files; made absolute against the directory the command ran from.
PATH_KEYS = (("task", "data"), ("model", "w2v_path"), ("checkpoint", "finetune_from_model"),
             ("common", "tensorboard_logdir"), ("common", "log_file"))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="w2v2-hydra-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", "-cd", default=None, help="folder of YAML configs (default: bundled recipes)")
    parser.add_argument("--config-path", "-cp", default=None, help="same as --config-dir (Hydra's other name)")
    parser.add_argument("--config-name", "-cn", required=True, help="config file name without .yaml")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error as well (or set W2V2_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: key=value, +key=value, ~key")
    return parser.parse_args(argv)


def load(args: argparse.Namespace, cwd: str) -> LoadedConfig:
    """The validated config with file paths made absolute against `cwd`."""
    loaded = load_train_config(args.config_dir or args.config_path, args.config_name, list(args.overrides))
    for group, key in PATH_KEYS:
        section = getattr(loaded.cfg, group)
        value = getattr(section, key, None)
        if isinstance(value, str) and value and not os.path.isabs(value):
            setattr(section, key, os.path.join(cwd, os.path.expanduser(value)))
    if not os.path.isabs(loaded.run_dir):
        loaded.run_dir = os.path.join(cwd, loaded.run_dir)
    return loaded


def run_worker(argv: List[str], cwd: str) -> float:
    """Train as one process (rank from the environment); returns the best validation metric."""
    from w2v2.train.loop import train  # imports torch and the models: only in processes that train

    args = parse_args(argv)
    loaded = load(args, cwd)
    run_dir = Path(loaded.run_dir)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        _make_run_dir(run_dir)
        _write_config(loaded, run_dir)
    setup_console_logging(run_dir / "hydra_train.log" if rank == 0 else None, rank, loaded.cfg.common.log_file)
    logger.info("config %s, run directory %s", loaded.config_path, run_dir)
    try:
        summary = train(loaded.cfg, run_dir)
    except TrainingInterrupted as stopped:
        if "TORCHELASTIC_RUN_ID" in os.environ:
            sys.exit(stopped.exit_code)  # a launched worker reports it as its exit status, as a killed one would
        raise
    return summary.best if summary.best is not None else float("nan")


def _make_run_dir(run_dir: Path) -> None:
    """Create the run directory (and `.hydra/` in it), or say why it cannot be written."""
    try:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise W2v2Error(f"`hydra.run.dir` {run_dir} cannot be created: {error.strerror}; pass a writable folder, "
                        "e.g. hydra.run.dir=outputs/run1.") from error
    if not os.access(run_dir, os.W_OK):
        raise W2v2Error(f"`hydra.run.dir` {run_dir} is not writable; pass a writable folder, e.g. "
                        "hydra.run.dir=outputs/run1.")


def _write_config(loaded: LoadedConfig, run_dir: Path) -> None:
    """`.hydra/config.yaml` in the run directory, as Hydra leaves it, for the record."""
    from omegaconf import OmegaConf

    target = run_dir / ".hydra" / "config.yaml"
    write_text_atomically(target, OmegaConf.to_yaml(OmegaConf.create(loaded.cfg.to_dict())))


def spawned_worker(argv: List[str], cwd: str, error_dir: str) -> float:
    """`run_worker` in a spawned process: its W2v2Error goes to `error_dir/rank{RANK}.txt` for the launching
    process to print, and the process exits with the error's status (no launcher traceback)."""
    try:
        return run_worker(argv, cwd)
    except W2v2Error as error:
        if debugging("--debug" in argv):
            logger.exception("rank %s stopped", os.environ.get("RANK", "0"))
        Path(error_dir, f"rank{os.environ.get('RANK', '0')}.txt").write_text(paragraph(error), encoding="utf-8")
        if isinstance(error, RunFault):
            # the launcher stops the ranks left with SIGTERM once it has its failure: exit normally then, as
            # a rank killed by the signal leaves its semaphores to the resource tracker, which warns at exit
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(error.exit_status))
            time.sleep(SURVIVOR_GRACE_S)
        sys.exit(error.exit_status)


def spawn(argv: List[str], cwd: str, nprocs: int) -> None:
    """Start `nprocs` local processes with torchrun's launcher (elastic, single node). Failed ranks that all
    left a message become one W2v2Error; a rank that crashed or was killed is named after any messages."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=MONITOR_INTERVAL_S)
    if not debugging("--debug" in argv):
        _quiet_launcher()
    with tempfile.TemporaryDirectory(prefix="w2v2-errors-") as error_dir:
        try:
            elastic_launch(config, spawned_worker)(argv, cwd, error_dir)
        except SignalException as error:  # the launcher got it and passed it on: the workers saved and stopped
            raise SystemExit(128 + int(error.sigval)) from None
        except ChildFailedError as error:
            messages = {int(path.stem[len("rank"):]): path.read_text(encoding="utf-8")
                        for path in Path(error_dir).glob("rank*.txt")}
            crashed = {rank: failure for rank, failure in error.failures.items() if rank not in messages}
            reported = rank_error(messages, error.failures, nprocs)
            if not crashed:
                raise reported from error
            if reported is not None:  # a survivor's view of the crash: said before the crash itself
                print(f"w2v2-hydra-train: error: {paragraph(reported)}", file=sys.stderr)
            raise SystemExit(_worker_failure(crashed)) from None


def _quiet_launcher() -> None:
    """Silence the launcher's own report of a failed process (its traceback): we say it in one paragraph."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def rank_error(messages: Dict[int, str], failures: Dict[int, Any], nprocs: int) -> Optional[W2v2Error]:
    """The first rank's message (`messages`: rank -> paragraph) as one error with that rank's exit status,
    naming the other failed ranks; None without messages."""
    if not messages:
        return None
    first = min(messages)
    others = [rank for rank in sorted(failures) if rank != first]
    also = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped too)" if others else ""
    status = failures[first].exitcode if first in failures else W2v2Error.exit_status
    kind = RunFault if status == RunFault.exit_status else W2v2Error
    return kind(f"rank {first} of {nprocs}: {messages[first]}{also}")


def _worker_failure(crashed: Dict[int, Any]) -> int:
    """The exit status for ranks that failed without a message (torchrun ProcessFailures by rank), after a
    one-paragraph message: 128 + the signal when every one stopped on it after saving, else 1."""
    codes = {failure.exitcode for failure in crashed.values()}
    if len(codes) == 1 and codes <= {128 + s for s in STOP_SIGNALS}:
        return codes.pop()  # rank 0 has said where it saved
    rank = min(crashed, key=lambda r: crashed[r].timestamp)
    first = crashed[rank]
    how = f"was killed by {first.signal_name()}" if first.exitcode < 0 else f"exited with status {first.exitcode}"
    print(f"w2v2-hydra-train: error: rank {rank} (pid {first.pid}) {how}, so the launcher stopped the other "
          "ranks (any messages it wrote are above). Nothing was saved after the last checkpoint; run the same "
          "command again to resume from it.", file=sys.stderr)
    return 1


def check_world_size(configured: int, launched: Optional[str]) -> None:
    """Refuse a torchrun job whose process count differs from `distributed_world_size`: fairseq would
    quietly take torchrun's, changing the effective batch that the recipe's `update_freq` assumes."""
    if launched is not None and int(launched) != configured:
        raise W2v2Error(
            f"torchrun started WORLD_SIZE={launched} processes, but `distributed_training.distributed_world_size` "
            f"is {configured}; pass `distributed_training.distributed_world_size={launched}` (and adjust "
            "`optimization.update_freq` to keep the recipe's batch), or start that many processes."
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `w2v2-hydra-train` and `fairseq-hydra-train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cwd = os.getcwd()
    try:
        args = parse_args(argv)
        loaded = load(args, cwd)
        world = loaded.cfg.distributed_training.distributed_world_size
        check_world_size(world, os.environ.get("WORLD_SIZE"))
        if world > 1 and "WORLD_SIZE" not in os.environ:
            spawn(argv, cwd, world)
        else:
            run_worker(argv, cwd)
    except W2v2Error as error:
        return report("w2v2-hydra-train", error, "--debug" in argv)
    except TrainingInterrupted as stopped:
        return stopped.exit_code  # the run has printed where it saved
    except KeyboardInterrupt:  # before the first update: there is nothing to save yet
        print("w2v2-hydra-train: interrupted before training started; nothing was saved.", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
