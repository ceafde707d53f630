"""The training run: epochs of updates, validation, checkpoints, logs, stopping and resuming."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
from tqdm import tqdm

from w2v2 import devices
from w2v2.interop.checkpoints import checkpoint_dict, load_state
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train.checkpointing import CheckpointPolicy, load_optimizer_state, restore_path, rng_state, set_rng_state
from w2v2.train.config import TrainConfig
from w2v2.train.health import HealthMonitor
from w2v2.train.progress import RunLog, derive
from w2v2.train.setup import (DataPipeline, ProcessInfo, build_pipeline, build_trainer, choose_device,
                              init_process_group, process_info, seed_everything, thread_budget, valid_pipelines)
from w2v2.train.task import Task
from w2v2.train.trainer import Trainer, all_reduce_sums, sum_logs

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """Where the run is: what a checkpoint's `extra_state` records."""

    epoch: int = 1
    iterations_in_epoch: int = 0
    best: Optional[float] = None
    previous_training_time: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)  # end-of-epoch train and valid records


@dataclass
class RunSummary:
    """What `train` returns: update count, last epoch, best metric, throughput and time."""

    num_updates: int
    epoch: int
    best: Optional[float]
    max_train_wps: float
    seconds: float


class TrainingRun:
    """One process's share of a run (rank 0 also logs and writes checkpoints)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.info: ProcessInfo = process_info()
        self.device = choose_device(cfg, self.info)
        thread_budget(self.info, self.device, cfg.dataset.num_workers)
        init_process_group(self.info, self.device, cfg.distributed_training.heartbeat_timeout)
        seed_everything(cfg.common.seed)
        self.task = Task.setup(cfg)
        self.trainer: Trainer = build_trainer(cfg, self.task, self.device, self.info)
        self.save_dir = run_dir / cfg.checkpoint.save_dir
        if self.info.is_master:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self.policy = CheckpointPolicy(cfg.checkpoint, self.save_dir)
        self.log = RunLog(run_dir, cfg.common.log_format, cfg.common.tensorboard_logdir, self.info.is_master)
        self.state = RunState()
        self.last_validation: tuple = (-1, None)  # (update, metric) of the latest validation
        self.health = HealthMonitor(cfg)
        self.train_data: DataPipeline = build_pipeline(self.task, cfg.dataset.train_subset, True, self.device,
                                                       self.info, cfg.common.seed)
        self.valid_data = valid_pipelines(self.task, self.device, self.info, cfg.common.seed)
        self._restore()

    # ---- resuming -------------------------------------------------------------------------------
    def _restore(self) -> None:
        cfg = self.cfg.checkpoint
        path = restore_path(cfg, self.save_dir)
        if path is None:
            if cfg.finetune_from_model:
                self._load_weights(load_checkpoint_file(cfg.finetune_from_model))
            return
        state = load_checkpoint_file(path)
        self._load_weights(state)
        extra = state.get("extra_state") or {}
        ours = extra.get("w2v2") or {}
        history = (state.get("optimizer_history") or [{}])[-1]
        if not cfg.reset_optimizer and state.get("last_optimizer_state"):
            # fairseq's own files hold its Adam state as well (without our grad-scaler entry)
            load_optimizer_state(self.trainer.optimizer, state["last_optimizer_state"], str(path))
            self.trainer.scaler.load_state_dict(ours.get("grad_scaler") or self.trainer.scaler.state_dict())
        if not cfg.reset_optimizer:
            self.trainer.num_updates = int(history.get("num_updates", 0))
        if not cfg.reset_lr_scheduler:
            self.trainer.lr_scheduler.load_state_dict(history.get("lr_scheduler_state") or {})
        self.trainer.lr_scheduler.step_update(self.trainer.num_updates)
        self.state.best = extra.get("best")
        self.policy.best = self.state.best
        if not cfg.reset_dataloader:
            iterator = extra.get("train_iterator") or {}
            self.state.epoch = int(iterator.get("epoch", 1))
            self.state.iterations_in_epoch = int(iterator.get("iterations_in_epoch", 0))
        self.state.previous_training_time = float(extra.get("previous_training_time", 0.0))
        self.state.history = list(ours.get("history", []))
        if "rng" in ours and not cfg.reset_dataloader:
            set_rng_state(ours["rng"])
        logger.info("resumed from %s at epoch %d, update %d", path, self.state.epoch, self.trainer.num_updates)

    def _load_weights(self, state: Dict[str, Any]) -> None:
        load_state(self.trainer.model, state["model"], "checkpoint")

    # ---- saving ---------------------------------------------------------------------------------
    def _save(self, end_of_epoch: bool, metric: Optional[float]) -> None:
        decision = self.policy.decide(self.state.epoch, self.trainer.num_updates, end_of_epoch, metric)
        self.state.best = self.policy.best
        if not self.info.is_master or not decision.names:
            return
        self.policy.write(self._checkpoint_state(end_of_epoch), decision)

    def _checkpoint_state(self, end_of_epoch: bool) -> Dict[str, Any]:
        trainer, cfg = self.trainer, self.cfg
        iterations = len(self.train_data.sampler.batches()) if end_of_epoch else self.state.iterations_in_epoch
        extra = {
            "train_iterator": {"epoch": self.state.epoch, "iterations_in_epoch": iterations, "shuffle": True},
            "val_loss": self.state.best, "best": self.state.best, "metrics": {},
            "previous_training_time": self.state.previous_training_time + self.elapsed(),
            "w2v2": {"rng": rng_state(), "grad_scaler": trainer.scaler.state_dict(), "history": self.state.history},
        }
        cfg_dict = cfg.to_dict()
        if cfg.is_finetuning:
            cfg_dict["model"]["w2v_args"] = trainer.model.fairseq_cfg["model"]["w2v_args"]
        optimizer_state = None if cfg.checkpoint.no_save_optimizer_state else trainer.optimizer.state_dict()
        return checkpoint_dict(trainer.model, cfg_dict, num_updates=trainer.num_updates,
                               lr_scheduler_state=trainer.lr_scheduler.state_dict(),
                               optimizer_state=optimizer_state, extra_state=extra,
                               dictionary=self.task.dictionary)

    # ---- the loop -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.time() - self.start

    def run(self) -> RunSummary:
        """Train until max_update / max_epoch / stop_time / patience; returns the summary."""
        self.start = time.time()
        cfg = self.cfg.optimization
        while not self._should_stop():
            end_of_epoch = self._train_epoch()
            if end_of_epoch:
                metric = self._maybe_validate(end_of_epoch=True)
                self._save_if_due(end_of_epoch=True, metric=metric)
                self.state.epoch += 1
                self.state.iterations_in_epoch = 0
            if cfg.max_epoch and self.state.epoch > cfg.max_epoch:
                break
        self.log.close()
        wps = [r.get("train_wps", 0.0) for r in self.state.history if "train_wps" in r]
        return RunSummary(self.trainer.num_updates, self.state.epoch, self.state.best, max(wps, default=0.0),
                          self.state.previous_training_time + self.elapsed())

    def _should_stop(self) -> bool:
        cfg = self.cfg.optimization
        if cfg.max_update and self.trainer.num_updates >= cfg.max_update:
            return True
        if cfg.max_epoch and self.state.epoch > cfg.max_epoch:
            return True
        if cfg.stop_time_hours > 0 and self.elapsed() / 3600 > cfg.stop_time_hours:
            return True
        if self.cfg.optimization.stop_min_lr > 0 and self.trainer.lr() <= self.cfg.optimization.stop_min_lr:
            return True
        return self.health.patience_exhausted

    def _update_freq(self) -> int:
        freqs = self.cfg.optimization.update_freq
        return freqs[min(self.state.epoch, len(freqs)) - 1]


    def _train_epoch(self) -> bool:
        """Updates until the epoch ends (True) or a stop condition holds (False)."""
        data, trainer = self.train_data, self.trainer
        data.sampler.set_epoch(self.state.epoch, start=self.state.iterations_in_epoch)
        data.generator.manual_seed(self.cfg.common.seed + self.state.epoch)
        steps = len(data.sampler)
        freq = self._update_freq()
        bar = tqdm(total=math.ceil(steps / freq), desc=f"epoch {self.state.epoch:03d}", unit="upd",
                   disable=not (self.info.is_master and _interactive(self.cfg)), leave=False)
        interval: List[Dict[str, float]] = []
        epoch_logs: List[Dict[str, float]] = []
        epoch_start, interval_start, wait = time.time(), time.time(), 0.0
        stream = iter(data.loader)
        while True:
            fetch = time.time()
            chunk = _next_chunk(stream, freq)
            wait += time.time() - fetch
            if not chunk:
                break
            result = trainer.train_step(chunk)
            self.state.iterations_in_epoch += len(chunk)
            logs = {**result.stats, "gnorm_sum": result.grad_norm if result.stepped else 0.0,
                    "updates": 1.0 if result.stepped else 0.0}
            interval.append(logs)
            epoch_logs.append(logs)
            self.health.observe(result, trainer.num_updates)
            bar.update(1)
            if result.stepped and trainer.num_updates % self.cfg.common.log_interval == 0:
                self._log_train("train_inner", interval, time.time() - interval_start, wait)
                interval, interval_start, wait = [], time.time(), 0.0
            if result.stepped and self._mid_epoch_checkpoint_due():
                paused = time.time()
                metric = self._maybe_validate(end_of_epoch=False)
                self._save_if_due(end_of_epoch=False, metric=metric)
                interval_start += time.time() - paused  # throughput counts training time only
            if self._should_stop():
                bar.close()
                self._finish_epoch_logs(epoch_logs, time.time() - epoch_start)
                metric = self._maybe_validate(end_of_epoch=False, force=True)
                self._save_if_due(end_of_epoch=False, metric=metric, force=True)
                return False
        bar.close()
        self._finish_epoch_logs(epoch_logs, time.time() - epoch_start)
        return True

    def _mid_epoch_checkpoint_due(self) -> bool:
        updates, dcfg, ccfg = self.trainer.num_updates, self.cfg.dataset, self.cfg.checkpoint
        if updates < dcfg.validate_after_updates:
            return False
        save = ccfg.save_interval_updates > 0 and updates % ccfg.save_interval_updates == 0
        valid = dcfg.validate_interval_updates > 0 and updates % dcfg.validate_interval_updates == 0
        return save or valid

    def _log_train(self, tag: str, logs: List[Dict[str, float]], seconds: float, wait: float) -> Dict[str, float]:
        sums = sum_logs(logs)
        updates = int(sums.get("updates", 0))
        values = derive(sums, seconds, updates)
        values["gnorm"] = sums.get("gnorm_sum", 0.0) / max(updates, 1)
        values.update({"num_updates": self.trainer.num_updates, "lr": self.trainer.lr()})
        scale = self.trainer.loss_scale()
        if scale is not None:
            values["loss_scale"] = scale
        values.update({"data_wait": wait, "train_wall": seconds, "wall": self.elapsed(),
                       **devices.memory_stats(self.device)})
        prefix = "train_" if tag == "train" else ""
        record = {"epoch": self.state.epoch, **{prefix + k: v for k, v in values.items()}}
        self.log.record(tag, record, self.trainer.num_updates)
        devices.reset_peak_memory(self.device)  # the next record's peak is its own interval's
        return record

    def _finish_epoch_logs(self, logs: List[Dict[str, float]], seconds: float) -> None:
        if logs:
            self.state.history.append(self._log_train("train", logs, seconds, 0.0))

    # ---- validation -----------------------------------------------------------------------------
    def _maybe_validate(self, end_of_epoch: bool, force: bool = False) -> Optional[float]:
        dcfg = self.cfg.dataset
        if not self.valid_data or self.trainer.num_updates < dcfg.validate_after_updates:
            return None
        if self.last_validation[0] == self.trainer.num_updates:  # already done at this update
            return self.last_validation[1]
        due = force or not end_of_epoch or self.state.epoch % dcfg.validate_interval == 0
        return self.validate() if due else None

    def validate(self) -> Optional[float]:
        """Validate on every valid subset; returns the first subset's `best_checkpoint_metric`."""
        metric_name = self.cfg.checkpoint.best_checkpoint_metric
        first: Optional[float] = None
        seed = self.cfg.dataset.fixed_validation_seed or self.cfg.common.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, data in self.valid_data.items():
                values = self._validate_subset(name, data)
                if first is None:
                    first = values.get(metric_name)
                    if first is not None:
                        best = first if self.policy.is_better(first) else self.policy.best
                        values[f"best_{metric_name}"] = best
                record = {"epoch": self.state.epoch, **{f"valid_{k}": v for k, v in values.items()}}
                self.log.record("valid" if name == next(iter(self.valid_data)) else f"valid_{name}", record,
                                self.trainer.num_updates)
                self.state.history.append(record)
        self.health.observe_validation(first)
        self.last_validation = (self.trainer.num_updates, first)
        return first

    def _validate_subset(self, name: str, data: DataPipeline) -> Dict[str, float]:
        start = time.time()
        data.sampler.set_epoch(1)
        logs = []
        limit = self.cfg.dataset.max_valid_steps
        for i, batch in enumerate(data.loader):
            if limit and i >= limit:
                break
            logs.append(self.trainer.valid_step(batch))
        sums = all_reduce_sums(sum_logs(logs), self.device)
        values = derive(sums, time.time() - start, 0)
        values["num_updates"] = self.trainer.num_updates
        return values

    def _save_if_due(self, end_of_epoch: bool, metric: Optional[float], force: bool = False) -> None:
        ccfg = self.cfg.checkpoint
        updates = self.trainer.num_updates
        due = (end_of_epoch and self.state.epoch % ccfg.save_interval == 0) or force or (
            ccfg.save_interval_updates > 0 and updates % ccfg.save_interval_updates == 0
            and updates >= self.cfg.dataset.validate_after_updates)
        if due and not ccfg.no_save:
            self._save(end_of_epoch, metric)


def _next_chunk(stream: Iterator[Any], size: int) -> List[Any]:
    """The next `size` batches of `stream` (fewer at its end, none after it)."""
    chunk: List[Any] = []
    for batch in stream:
        chunk.append(batch)
        if len(chunk) == size:
            break
    return chunk


def _interactive(cfg: TrainConfig) -> bool:
    return cfg.common.log_format in (None, "tqdm") and not cfg.common.no_progress_bar and sys.stderr.isatty()


def train(cfg: TrainConfig, run_dir: Path) -> RunSummary:
    """Run training in this process (one rank of a torchrun job, or the only process)."""
    run = TrainingRun(cfg, run_dir)
    summary = run.run()
    logger.info("done training in %.1f seconds: %d updates, epoch %d, best %s %s, max train_wps %.1f",
                summary.seconds, summary.num_updates, summary.epoch, cfg.checkpoint.best_checkpoint_metric,
                summary.best, summary.max_train_wps)
    return summary
