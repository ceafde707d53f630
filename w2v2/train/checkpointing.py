"""Which checkpoints a run writes and keeps (fairseq's names and rules), and resuming from one."""

from __future__ import annotations

import logging
import math
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write
from w2v2.interop.checkpoints import atomic_torch_save
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train.config import CheckpointConfig

logger = logging.getLogger(__name__)


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states, so a resumed run draws what an uninterrupted one would."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array is stored as a list: weights-only loading refuses numpy arrays
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """torch.save turns the tuples of RNG states into lists on the way back in; undo that."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def at_least_as_good(value: float, than: Optional[float], maximize: bool) -> bool:
    """fairseq's test for a new best checkpoint (ties count); a non-finite value never is one."""
    if not math.isfinite(value):
        return False
    return than is None or (value >= than if maximize else value <= than)


class BestMetric:
    """The best validation value of `checkpoint.best_checkpoint_metric`, kept in this one place, with
    fairseq's rules: a tie makes a new `checkpoint_best.pt`, only a strict improvement resets the
    patience count, and a non-finite value is never the best."""

    def __init__(self, cfg: CheckpointConfig) -> None:
        self.maximize, self.patience = cfg.maximize_best_checkpoint_metric, cfg.patience
        self.value: Optional[float] = None  # what checkpoints store as extra_state["best"]
        self.patience_best: Optional[float] = None
        self.stale = 0  # validations since the last strict improvement

    def observe(self, value: Optional[float]) -> bool:
        """Record one validation value; True when it makes a new best checkpoint."""
        if value is None:
            return False
        new_best = at_least_as_good(value, self.value, self.maximize)
        if new_best:
            self.value = value
        strictly = math.isfinite(value) and (self.patience_best is None or (
            value > self.patience_best if self.maximize else value < self.patience_best))
        self.patience_best, self.stale = (value, 0) if strictly else (self.patience_best, self.stale + 1)
        return new_best

    @property
    def patience_exhausted(self) -> bool:
        """True after `patience` validations without a strict improvement."""
        return self.patience > 0 and self.stale >= self.patience


class CheckpointPolicy:
    """fairseq's rules for checkpoint names, which files a save writes, and what it deletes."""

    def __init__(self, cfg: CheckpointConfig, save_dir: Path) -> None:
        self.cfg, self.save_dir = cfg, save_dir

    def names(self, epoch: int, updates: int, end_of_epoch: bool, metric: Optional[float], new_best: bool) -> List[str]:
        """File names of a save at (`epoch`, `updates`); the first is written, the others are copies."""
        cfg, suffix = self.cfg, self.cfg.checkpoint_suffix
        conditions = {
            f"checkpoint{epoch}{suffix}.pt": end_of_epoch and not cfg.no_epoch_checkpoints
            and epoch % cfg.save_interval == 0,
            f"checkpoint_{epoch}_{updates}{suffix}.pt": not end_of_epoch and cfg.save_interval_updates > 0
            and updates % cfg.save_interval_updates == 0,
            f"checkpoint_best{suffix}.pt": new_best,
        }
        if metric is not None and cfg.keep_best_checkpoints > 0:
            conditions.update(self._kept_best_name(epoch, updates, metric))
        conditions[f"checkpoint_last{suffix}.pt"] = not cfg.no_last_checkpoints
        return [name for name, wanted in conditions.items() if wanted]

    def _kept_best_name(self, epoch: int, updates: int, metric: float) -> Dict[str, bool]:
        """fairseq's `checkpoint.best_{metric}_{value:.3f}{digit}.pt`, wanted when `metric` beats the worst
        kept one; the digit, drawn from a seed of (epoch, updates, metric), tells ties apart."""
        kept = self._kept_best()
        worst = None
        if kept:
            worst = kept[-1][0] if self.cfg.maximize_best_checkpoint_metric else kept[0][0]
        seed = int(hash((epoch, updates, metric)) % 1e6)
        digit = np.random.RandomState(seed).randint(0, self.cfg.keep_best_checkpoints)
        name = f"checkpoint.best_{self.cfg.best_checkpoint_metric}_{metric:.3f}{digit}{self.cfg.checkpoint_suffix}.pt"
        return {name: at_least_as_good(metric, worst, self.cfg.maximize_best_checkpoint_metric)}

    def _kept_best(self) -> List[Tuple[float, Path]]:
        """The kept-best files with their values, highest value first."""
        pattern = (rf"checkpoint\.best_{re.escape(self.cfg.best_checkpoint_metric)}_(\d+\.?\d*)"
                   rf"{re.escape(self.cfg.checkpoint_suffix)}\.pt")
        return _numbered(self.save_dir, pattern)

    def write(self, state: Dict[str, Any], names: List[str]) -> List[Path]:
        """Write the first name atomically, copy it to the others, then delete what is not kept."""
        if not names:
            return []
        paths = [self.save_dir / name for name in names]
        try:
            atomic_torch_save(state, paths[0])
            for path in paths[1:]:
                with open(paths[0], "rb") as source, atomic_write(path, "wb") as copy:
                    shutil.copyfileobj(source, copy)
        except W2v2Error as error:
            raise W2v2Error(f"saving a checkpoint failed, so training stopped: {error} Every checkpoint is "
                            f"written to a temporary file first, so those already in {self.save_dir} are intact; "
                            "make room and run the same command again to resume from the newest.") from error
        self._prune()
        return paths

    def _prune(self) -> None:
        """Keep the newest `keep_interval_updates` update checkpoints, the newest `keep_last_epochs`
        epoch ones and the `keep_best_checkpoints` best ones."""
        cfg, suffix = self.cfg, re.escape(self.cfg.checkpoint_suffix)
        doomed: List[Path] = []
        if cfg.keep_interval_updates > 0:
            found = _numbered(self.save_dir, rf"checkpoint_\d+_(\d+){suffix}\.pt")
            if cfg.keep_interval_updates_pattern > 0:
                found = [(n, p) for n, p in found if n % cfg.keep_interval_updates_pattern != 0]
            doomed += [p for _, p in found[cfg.keep_interval_updates:]]
        if cfg.keep_last_epochs > 0:
            doomed += [p for _, p in _numbered(self.save_dir, rf"checkpoint(\d+){suffix}\.pt")[cfg.keep_last_epochs:]]
        if cfg.keep_best_checkpoints > 0:
            best = self._kept_best()
            best = best if cfg.maximize_best_checkpoint_metric else best[::-1]
            doomed += [p for _, p in best[cfg.keep_best_checkpoints:]]
        for path in doomed:
            path.unlink(missing_ok=True)


def _numbered(folder: Path, pattern: str) -> List[Tuple[float, Path]]:
    """Files of `folder` whose names match `pattern`, by the number in its group, highest first."""
    found = [(float(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name))]
    return sorted(found, key=lambda item: item[0], reverse=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Dict[str, Any], where: str) -> None:
    """Load a checkpoint's Adam state (ours or fairseq's: the same layout, parameters in model order),
    after checking that every moment has its parameter's shape; torch itself does not check that."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(group["params"]) for group in saved.get("param_groups", [])]
    if sizes != [len(group["params"]) for group in optimizer.param_groups]:
        raise W2v2Error(f"{where}: `last_optimizer_state` has parameter groups of {sizes} parameters, but the "
                        f"model trains {len(params)}; restore with `checkpoint.reset_optimizer=true`.")
    for index, moments in saved.get("state", {}).items():
        shape = moments.get("exp_avg", params[index]).shape
        if shape != params[index].shape:
            raise W2v2Error(f"{where}: `last_optimizer_state` parameter {index} has shape {tuple(shape)}, but "
                            f"the model's has {tuple(params[index].shape)}; restore with "
                            "`checkpoint.reset_optimizer=true`.")
    optimizer.load_state_dict(saved)


def find_restore(cfg: CheckpointConfig, save_dir: Path) -> Optional[Tuple[Path, Dict[str, Any], str]]:
    """(path, state, why that one) of the checkpoint to resume from, or None to start afresh.

    An explicit `checkpoint.restore_file` must load. With the default, `checkpoint_last.pt`, the newest
    loadable file of `save_dir` is taken among checkpoint_last, the interval, epoch and best checkpoints,
    so that a kill between two writes of one save, or a damaged `checkpoint_last.pt`, loses nothing."""
    name = cfg.restore_file
    if name != "checkpoint_last.pt":
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = save_dir / name
        if not path.is_file():
            raise W2v2Error(f"`checkpoint.restore_file` {name} does not exist (looked in {save_dir} too).")
        return path, load_checkpoint_file(path), "it is `checkpoint.restore_file`"
    last = f"checkpoint_last{cfg.checkpoint_suffix}.pt"
    unreadable: List[str] = []
    for path in _resume_candidates(save_dir, cfg.checkpoint_suffix):
        try:
            state = load_checkpoint_file(path)
        except W2v2Error as error:
            logger.warning("cannot resume from %s, trying an older checkpoint: %s", path, error)
            unreadable.append(path.name)
            continue
        why = "the newest loadable checkpoint in the save directory"
        if unreadable:
            why += f" ({', '.join(unreadable)} newer but unreadable)"
        elif path.name != last:
            why += f" (newer than {last}: a save was cut short)" if (save_dir / last).exists() else f" (no {last})"
        return path, state, why
    if unreadable:
        raise W2v2Error(f"no checkpoint in {save_dir} can be loaded ({', '.join(unreadable)}: see the warnings "
                        "above), so the run cannot resume; move them away to start afresh, or set "
                        "`checkpoint.restore_file` to a good file.")
    return None


def _resume_candidates(save_dir: Path, suffix: str) -> List[Path]:
    """checkpoint_last, interval and epoch checkpoints, newest first (checkpoint_last first on a tie), then
    checkpoint_best: a save writes it together with one of the others, which holds the same state."""
    if not save_dir.is_dir():
        return []
    pattern = rf"checkpoint(_last|_best|\d+|_\d+_\d+){re.escape(suffix)}\.pt"
    found = [p for p in save_dir.iterdir() if re.fullmatch(pattern, p.name) and p.is_file()]
    return sorted(found, key=lambda p: (not p.name.startswith("checkpoint_best"), p.stat().st_mtime_ns,
                                        p.name.startswith("checkpoint_last")), reverse=True)


def world_size_position(state: Dict[str, Any], world_size: int) -> int:
    """The checkpoint's `iterations_in_epoch` for `world_size` processes: each process's step count, so a
    run resumed with another world size continues at the same share of the epoch."""
    saved = int((state.get("extra_state") or {}).get("train_iterator", {}).get("iterations_in_epoch", 0))
    ours = (state.get("extra_state") or {}).get("w2v2") or {}
    written_by = int(ours.get("world_size") or state.get("cfg", {}).get("distributed_training", {})
                     .get("distributed_world_size") or 1)
    if written_by == world_size or saved == 0:
        return saved
    position = saved * written_by // world_size
    logger.warning("the checkpoint was written by %d processes, each at step %d of the epoch, and this run has %d: "
                   "each continues at step %d, the same share of the epoch (which utterances the remaining steps "
                   "hold differs from an uninterrupted run).", written_by, saved, world_size, position)
    return position
