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
from w2v2.errors import RunFault, W2v2Error
from w2v2.interop.checkpoints import checkpoint_dict, load_state
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.fileio import remove_stale_temp_files
from w2v2.schema import ineffective_settings
from w2v2.train.checkpointing import (BestMetric, CheckpointPolicy, at_least_as_good, find_restore, gather_device_rng,
                                      load_optimizer_state, on_cpu, rng_state, set_rng_state, world_size_position)
from w2v2.train.config import TrainConfig
from w2v2.train.health import HealthMonitor, TrainingDiverged, nonfinite_batches
from w2v2.train.interrupts import StopSignals, TrainingInterrupted, all_ranks_wait, collective_failure, signal_name
from w2v2.train.progress import RunLog, derive
from w2v2.train.setup import (DataPipeline, ProcessInfo, build_pipeline, build_trainer, choose_device,
                              init_process_group, leave_process_group, no_batch_message, process_info, seed_everything,
                              thread_budget, valid_pipelines)
from w2v2.train.task import setup_task
from w2v2.train.trainer import Trainer, all_reduce_sums, sum_logs

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """Where the run is: what a checkpoint's `extra_state` records besides the best metric."""

    epoch: int = 1
    iterations_in_epoch: int = 0
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
    """One process's share of a run (rank 0 also logs and writes checkpoints).

    After every update `_validate_and_save` decides, with fairseq's rules, whether to validate and
    whether to save; `BestMetric` alone tracks the best validation value and the patience count.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.info: ProcessInfo = process_info()
        self.device = choose_device(cfg, self.info)
        thread_budget(self.info, self.device, cfg.dataset.num_workers)
        init_process_group(self.info, self.device, cfg.distributed_training.heartbeat_timeout)
        seed_everything(cfg.common.seed)
        if self.info.is_master:
            for setting in ineffective_settings(cfg.groups()):
                logger.warning("%s has no effect in w2v2: it is accepted for fairseq compatibility only.", setting)
        self.task = setup_task(cfg)
        self.trainer: Trainer = build_trainer(cfg, self.task, self.device, self.info)
        self.save_dir = run_dir / cfg.checkpoint.save_dir
        if self.info.is_master:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            for folder in (run_dir, self.save_dir):
                removed = remove_stale_temp_files(folder)
                if removed:
                    logger.info("removed %d temporary files left by interrupted writes: %s", len(removed),
                                ", ".join(p.name for p in removed))
        self.policy = CheckpointPolicy(cfg.checkpoint, self.save_dir)
        self.best = BestMetric(cfg.checkpoint)
        self.log = RunLog(run_dir, cfg.common.log_format, cfg.common.tensorboard_logdir, self.info.is_master)
        self.state = RunState()
        self.health = HealthMonitor(cfg)
        self.signals = StopSignals()
        self.train_data: DataPipeline = build_pipeline(self.task, cfg.dataset.train_subset, True, self.device,
                                                       self.info, cfg.common.seed)
        self.valid_data = valid_pipelines(self.task, self.device, self.info, cfg.common.seed)
        self.start = time.time()
        self._restore()

    # ---- resuming -------------------------------------------------------------------------------
    def _restore(self) -> None:
        cfg = self.cfg.checkpoint
        found = find_restore(cfg, self.save_dir)
        if found is None:
            self.log.keep_records_up_to(0)  # a run killed before its first save left records of updates redone now
            if cfg.finetune_from_model:
                self._load_weights(load_checkpoint_file(cfg.finetune_from_model))
            return
        path, state, reason = found
        logger.info("resuming from %s: %s", path, reason)
        self._load_weights(state)
        extra = state.get("extra_state") or {}
        ours = extra.get("w2v2") or {}
        history = (state.get("optimizer_history") or [{}])[-1]
        if not cfg.reset_optimizer:
            if state.get("last_optimizer_state"):  # fairseq's own files hold its Adam state too (no scaler entry)
                self._load_optimizer(state["last_optimizer_state"], ours.get("grad_scaler"), str(path))
            self.trainer.num_updates = int(history.get("num_updates", 0))
        if not cfg.reset_lr_scheduler:
            self.trainer.lr_scheduler.load_state_dict(history.get("lr_scheduler_state") or {})
        self.trainer.lr_scheduler.step_update(self.trainer.num_updates)
        self.best.value = extra.get("best")
        self.log.keep_records_up_to(int(history.get("num_updates", 0)))
        if not cfg.reset_dataloader:
            iterator = extra.get("train_iterator") or {}
            self.state.epoch = int(iterator.get("epoch", 1))
            self.state.iterations_in_epoch = world_size_position(state, self.info.world_size)
            if "rng" in ours:
                set_rng_state(ours["rng"], self.device, self.info.rank)
        self.state.previous_training_time = float(extra.get("previous_training_time", 0.0))
        if not cfg.reset_meters:
            self.state.history = list(ours.get("history", []))
        logger.info("resumed from %s at epoch %d, update %d", path, self.state.epoch, self.trainer.num_updates)

    def _load_optimizer(self, optimizer_state: Dict[str, Any], scaler_state: Optional[Dict[str, Any]],
                        where: str) -> None:
        """The saved optimizer and loss-scaler state, then `checkpoint.optimizer_overrides` on every group."""
        trainer = self.trainer
        load_optimizer_state(trainer.optimizer, optimizer_state, where)
        trainer.scaler.load_state_dict(scaler_state or trainer.scaler.state_dict())
        for group in trainer.optimizer.param_groups:
            group.update(self.cfg.checkpoint.overrides())

    def _load_weights(self, state: Dict[str, Any]) -> None:
        load_state(self.trainer.model, state["model"], "checkpoint")

    # ---- validating and saving ------------------------------------------------------------------
    def _validate_and_save(self, end_of_epoch: bool) -> tuple:
        """fairseq's rules for when to validate and save after an update; returns (metric, stop)."""
        cfg, updates, epoch = self.cfg, self.trainer.num_updates, self.state.epoch
        stop = self._limit_reached()
        every = cfg.checkpoint.save_interval_updates
        do_save = (end_of_epoch and epoch % cfg.checkpoint.save_interval == 0) or stop or (
            every > 0 and updates > 0 and updates % every == 0 and updates >= cfg.dataset.validate_after_updates)
        every = cfg.dataset.validate_interval_updates
        do_validate = ((not end_of_epoch and do_save) or (end_of_epoch and epoch % cfg.dataset.validate_interval == 0)
                       or stop or (every > 0 and updates > 0 and updates % every == 0)) \
            and bool(self.valid_data) and updates >= cfg.dataset.validate_after_updates
        metric = self.validate() if do_validate else None
        new_best = self.best.observe(metric)
        if self.best.patience_exhausted:
            logger.info("no improvement in %d validations: stopping (checkpoint.patience).", self.best.patience)
            stop = True
        if (do_save or stop) and not cfg.checkpoint.no_save:
            device_rng = gather_device_rng(self.device)  # a collective: every rank takes part
            names = self.policy.names(epoch, updates, end_of_epoch, metric, new_best)
            if self.info.is_master and names:
                paths = self.policy.write(self._checkpoint_state(end_of_epoch, metric, device_rng), names)
                logger.info("saved checkpoint %s (epoch %d @ %d updates, score %s)", paths[0], epoch, updates, metric)
        return metric, stop

    def _checkpoint_state(self, end_of_epoch: bool, metric: Optional[float],
                          device_rng: List[torch.Tensor]) -> Dict[str, Any]:
        """The checkpoint dict, every tensor copied to the CPU; `device_rng` holds each rank's device RNG."""
        trainer, cfg = self.trainer, self.cfg
        iterations = len(self.train_data.sampler.batches()) if end_of_epoch else self.state.iterations_in_epoch
        extra = {
            "train_iterator": {"epoch": self.state.epoch, "iterations_in_epoch": iterations,
                               "shuffle": self.state.epoch > cfg.dataset.curriculum},
            "val_loss": metric, "metrics": {},
            "previous_training_time": self.state.previous_training_time + self.elapsed(),
            "w2v2": {"rng": rng_state(device_rng, devices.kind(self.device)),
                     "grad_scaler": trainer.scaler.state_dict(), "history": self.state.history,
                     "world_size": self.info.world_size},
        }
        if self.best.value is not None:  # absent until then, as in fairseq (`checkpoint_dict`)
            extra["best"] = self.best.value
        optimizer_state = None if cfg.checkpoint.no_save_optimizer_state else trainer.optimizer.state_dict()
        return on_cpu(checkpoint_dict(trainer.model, cfg.to_dict(), num_updates=trainer.num_updates,
                                      lr_scheduler_state=trainer.lr_scheduler.state_dict(),
                                      optimizer_state=optimizer_state, extra_state=extra,
                                      dictionary=self.task.dictionary))

    def validate(self) -> Optional[float]:
        """Validate on every valid subset; returns the first subset's `best_checkpoint_metric`."""
        metric_name = self.cfg.checkpoint.best_checkpoint_metric
        first: Optional[float] = None
        seed = self.cfg.dataset.fixed_validation_seed or self.cfg.common.seed
        with devices.fork_rng(self.device):  # the CPU's and the accelerator's
            torch.manual_seed(seed)
            for i, (name, data) in enumerate(self.valid_data.items()):
                values = self._validate_subset(name, data)
                if i == 0:
                    first = values.get(metric_name)
                    if first is not None:
                        better = at_least_as_good(first, self.best.value, self.best.maximize)
                        values[f"best_{metric_name}"] = first if better else self.best.value
                record = {"epoch": self.state.epoch, **{f"valid_{k}": v for k, v in values.items()}}
                self.log.record("valid" if i == 0 else f"valid_{name}", record, self.trainer.num_updates)
                self.state.history.append(record)
        return first

    def _validate_subset(self, name: str, data: DataPipeline) -> Dict[str, float]:
        start = time.time()
        data.sampler.set_epoch(1)
        logs, bad = [], []
        limit = self.cfg.dataset.max_valid_steps
        for i, batch in enumerate(data.loader):
            if limit and i >= limit:
                break
            logs.append(self.trainer.valid_step(batch))
            if not math.isfinite(logs[-1].get("loss", 0.0)):
                bad += nonfinite_batches([batch], data.dataset.paths)
        if bad:
            logger.warning("validation loss is not finite on %d utterances of %r, so this validation cannot make a "
                           "best checkpoint; their batches held %s", len(bad), name, ", ".join(bad[:20]) +
                           (" ..." if len(bad) > 20 else ""))
        sums = all_reduce_sums(sum_logs(logs), self.device)
        values = derive(sums, time.time() - start, 0)
        values["num_updates"] = self.trainer.num_updates
        return values

    def leave(self) -> None:
        """The end of this process's part: the process group is destroyed while the interpreter is whole."""
        self.trainer.release_ddp()
        leave_process_group()

    # ---- the loop -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.time() - self.start

    def run(self) -> RunSummary:
        """Train until max_update / max_epoch / stop_time / stop_min_lr / patience; returns the summary."""
        self.start = time.time()
        max_epoch = self.cfg.optimization.max_epoch or math.inf
        with self.signals:
            try:
                while self.state.epoch <= max_epoch and not self._limit_reached():
                    if self.trainer.lr() <= self.cfg.optimization.stop_min_lr:
                        logger.info("stopping: the lr %g reached optimization.stop_min_lr", self.trainer.lr())
                        break
                    metric, stop = self._train_epoch()
                    self.trainer.lr_scheduler.step(metric)  # fairseq's end-of-epoch lr step records the metric
                    if stop:
                        break
                    self.state.epoch += 1
                    self.state.iterations_in_epoch = 0
            except RuntimeError as error:
                if self.info.world_size > 1 and collective_failure(error):
                    raise RunFault(
                        f"rank {self.info.rank}: an exchange with the other ranks failed after update "
                        f"{self.trainer.num_updates} ({str(error).splitlines()[0].strip()}): another rank died, or did "
                        "not answer within `distributed_training.heartbeat_timeout` (seconds; -1: 30 minutes). The "
                        "newest checkpoint is kept; run the same command again to resume from it.") from error
                raise
            finally:
                self.log.close()
        wps = [r.get("train_wps", 0.0) for r in self.state.history if "train_wps" in r]
        return RunSummary(self.trainer.num_updates, self.state.epoch, self.best.value, max(wps, default=0.0),
                          self.state.previous_training_time + self.elapsed())

    def _limit_reached(self) -> bool:
        """max_update or stop_time_hours reached (fairseq checks these after every update)."""
        cfg = self.cfg.optimization
        if cfg.max_update and self.trainer.num_updates >= cfg.max_update:
            return True
        hours = (self.state.previous_training_time + self.elapsed()) / 3600
        return cfg.stop_time_hours > 0 and hours > cfg.stop_time_hours

    def _update_freq(self) -> int:
        freqs = self.cfg.optimization.update_freq
        return freqs[min(self.state.epoch, len(freqs)) - 1]

    def _train_epoch(self) -> tuple:
        """Updates until the epoch ends or a stop condition holds; returns (last metric, stop)."""
        data, trainer = self.train_data, self.trainer
        data.sampler.set_epoch(self.state.epoch, start=self.state.iterations_in_epoch,
                               shuffle=self.state.epoch > self.cfg.dataset.curriculum)  # fairseq's curriculum rule
        data.generator.manual_seed(self.cfg.common.seed + self.state.epoch)
        if not data.sampler.batches():
            raise W2v2Error(no_batch_message(data, self.cfg))
        steps, freq = len(data.sampler), self._update_freq()
        if self.cfg.optimization.skip_remainder_batch:
            steps -= steps % freq  # fairseq drops the last update when it would have fewer batches
        bar = tqdm(total=math.ceil(steps / freq), desc=f"epoch {self.state.epoch:03d}", unit="upd",
                   disable=not (self.info.is_master and _interactive(self.cfg)), leave=False)
        interval: List[Dict[str, float]] = []
        epoch_logs: List[Dict[str, float]] = []
        epoch_start, interval_start, wait, done = time.time(), time.time(), 0.0, 0
        stream = iter(data.loader)
        metric, stop = None, False
        while done < steps:
            fetch = time.time()
            chunk = _next_chunk(stream, min(freq, steps - done))
            wait += time.time() - fetch
            if not chunk:
                break
            result = trainer.train_step(chunk)
            done += len(chunk)
            self.state.iterations_in_epoch += len(chunk)
            logs = {**result.stats, "gnorm_sum": result.grad_norm if result.stepped else 0.0,
                    "updates": 1.0 if result.stepped else 0.0}
            interval.append(logs)
            epoch_logs.append(logs)
            self._observe_health(result, chunk, done >= steps)
            interrupted = self.signals.agreed(self.device)  # on every rank after every update, skipped or not
            bar.update(1)
            if result.stepped and trainer.num_updates % self.cfg.common.log_interval == 0:
                self._log_train("train_inner", interval, time.time() - interval_start, wait)
                interval, interval_start, wait = [], time.time(), 0.0
            # after an overflow-skipped update the count did not move, so nothing new is due
            if result.stepped or done >= steps:
                paused = time.time()
                metric, stop = self._validate_and_save(end_of_epoch=done >= steps)
                interval_start += time.time() - paused  # throughput counts training time only
                epoch_start += time.time() - paused
            if interrupted and not stop:  # a run that just reached its end has saved and ends normally
                self._stop_on_signal(interrupted, end_of_epoch=done >= steps)
            if stop:
                break
        bar.close()
        self._finish_epoch_logs(epoch_logs, time.time() - epoch_start)
        return metric, stop

    def _save_now(self, end_of_epoch: bool) -> Optional[Path]:
        """Write `checkpoint_last.pt` now, whatever the schedule (rank 0 writes, every rank returns its path);
        None with `checkpoint.no_save`."""
        cfg = self.cfg.checkpoint
        if cfg.no_save:
            return None
        path = self.save_dir / f"checkpoint_last{cfg.checkpoint_suffix}.pt"
        device_rng = gather_device_rng(self.device)  # a collective: every rank takes part
        if self.info.is_master:
            self.policy.write(self._checkpoint_state(end_of_epoch, None, device_rng), [path.name])
        return path

    def _stop_on_signal(self, signum: int, end_of_epoch: bool) -> None:
        """Save, say where in one line, wait for every rank, and raise TrainingInterrupted."""
        path = self._save_now(end_of_epoch)
        where = f"saved {path}" if path else "nothing saved (`checkpoint.no_save`)"
        message = (f"stopped by {signal_name(signum)} after update {self.trainer.num_updates}: {where}; "
                   "run the same command again to resume.")
        if self.info.is_master:
            logger.warning(message)
        all_ranks_wait()  # no rank exits (which makes torchrun kill the rest) before the file is complete
        raise TrainingInterrupted(signum, message)

    def _observe_health(self, result: Any, chunk: List[Dict[str, Any]], end_of_epoch: bool) -> None:
        """Warnings on the update (naming the utterances of a non-finite one); a diverged run stops saved."""
        names = self.train_data.dataset.paths
        utterances = [] if result.stepped else nonfinite_batches(chunk, names)
        try:
            self.health.observe(result, self.trainer.num_updates, utterances, self.trainer.scaler.is_enabled())
        except TrainingDiverged as error:
            finite = all(bool(torch.isfinite(p).all()) for p in self.trainer.model.parameters())
            path = self._save_now(end_of_epoch) if finite else None
            kept = f"The weights of update {self.trainer.num_updates}, the last update applied (skipped ones " \
                f"change nothing), are saved in {path}." if path else \
                ("The weights are no longer finite, so " if not finite else "With `checkpoint.no_save`, ") + \
                f"nothing was saved; the checkpoints already in {self.save_dir} are unchanged."
            all_ranks_wait()
            raise TrainingDiverged(f"{error} {kept} Lower `optimization.lr` (now {self.cfg.optimization.lr}), "
                                   "raise `lr_scheduler.warmup_updates` or check the audio named above, then "
                                   "resume or start over.") from None

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
    """Run training in this process (one rank of a torchrun job, or the only process). A SIGTERM or SIGINT
    raises `TrainingInterrupted` once `checkpoint_last.pt` is saved; divergence raises `TrainingDiverged`."""
    run = TrainingRun(cfg, run_dir)
    try:
        summary = run.run()
    except (TrainingInterrupted, TrainingDiverged):
        run.leave()  # every rank waited for the others before raising: none is left inside a collective
        raise
    run.leave()
    logger.info("done training in %.1f seconds: %d updates, epoch %d, best %s %s, max train_wps %.1f",
                summary.seconds, summary.num_updates, summary.epoch, cfg.checkpoint.best_checkpoint_metric,
                summary.best, summary.max_train_wps)
    if run.task.feature_cache is not None:
        logger.info("feature cache: %s", run.task.feature_cache.summary())
    return summary
