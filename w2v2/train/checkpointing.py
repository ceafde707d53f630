"""Which checkpoints a run writes and keeps (fairseq's names and rules), and resuming from one."""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from w2v2.errors import W2v2Error
from w2v2.fileio import atomic_write
from w2v2.interop.checkpoints import atomic_torch_save
from w2v2.train.config import CheckpointConfig


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


@dataclass
class SaveDecision:
    """The file names one save writes (the first is written, the others are copies)."""

    names: List[str]
    new_best: bool


class CheckpointPolicy:
    """fairseq's rules for checkpoint names, `checkpoint_best.pt` and what to delete."""

    def __init__(self, cfg: CheckpointConfig, save_dir: Path) -> None:
        self.cfg, self.save_dir = cfg, save_dir
        self.best: Optional[float] = None

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.cfg.maximize_best_checkpoint_metric else value < self.best

    def decide(self, epoch: int, updates: int, end_of_epoch: bool, metric: Optional[float]) -> SaveDecision:
        """Names for a save at (`epoch`, `updates`); `metric` is the validation value of the best metric."""
        cfg, suffix = self.cfg, self.cfg.checkpoint_suffix
        new_best = metric is not None and self.is_better(metric)
        names = []
        if end_of_epoch and not cfg.no_epoch_checkpoints and epoch % cfg.save_interval == 0:
            names.append(f"checkpoint{epoch}{suffix}.pt")
        if not end_of_epoch and cfg.save_interval_updates > 0 and updates % cfg.save_interval_updates == 0:
            names.append(f"checkpoint_{epoch}_{updates}{suffix}.pt")
        if new_best:
            names.append(f"checkpoint_best{suffix}.pt")
        if not cfg.no_last_checkpoints:
            names.append(f"checkpoint_last{suffix}.pt")
        if new_best:
            self.best = metric
        return SaveDecision(names, new_best)

    def write(self, state: Dict[str, Any], decision: SaveDecision) -> List[Path]:
        """Write the first name atomically, copy it to the others, then delete what is not kept."""
        if not decision.names or self.cfg.no_save:
            return []
        first = self.save_dir / decision.names[0]
        atomic_torch_save(state, first)
        paths = [first]
        for name in decision.names[1:]:
            with open(first, "rb") as source, atomic_write(self.save_dir / name, "wb") as copy:
                shutil.copyfileobj(source, copy)
            paths.append(self.save_dir / name)
        self._prune()
        return paths

    def _prune(self) -> None:
        """Keep the newest `keep_interval_updates` update checkpoints and `keep_last_epochs` epoch ones."""
        suffix = re.escape(self.cfg.checkpoint_suffix)
        rules = [(rf"checkpoint_\d+_(\d+){suffix}\.pt", self.cfg.keep_interval_updates),
                 (rf"checkpoint(\d+){suffix}\.pt", self.cfg.keep_last_epochs)]
        for pattern, keep in rules:
            if keep < 0:
                continue
            found = sorted(((int(m.group(1)), p) for p in self.save_dir.iterdir()
                            if (m := re.fullmatch(pattern, p.name))), reverse=True)
            pattern_keep = self.cfg.keep_interval_updates_pattern
            for number, path in found[keep:]:
                if pattern_keep > 0 and "_" in path.name and number % pattern_keep == 0:
                    continue
                path.unlink()


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


def restore_path(cfg: CheckpointConfig, save_dir: Path) -> Optional[Path]:
    """The file to resume from, or None to start afresh (a missing default `checkpoint_last.pt`)."""
    name = cfg.restore_file
    default = name == "checkpoint_last.pt"
    path = save_dir / name.replace("checkpoint_last.pt", f"checkpoint_last{cfg.checkpoint_suffix}.pt") \
        if default else Path(name)
    if not default and not path.is_absolute() and not path.exists():
        path = save_dir / name
    if path.is_file():
        return path
    if default:
        return None
    raise W2v2Error(f"`checkpoint.restore_file` {name} does not exist (looked in {save_dir} too).")

