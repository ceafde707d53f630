"""Warnings for the failures wav2vec 2.0 training is known for."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Sequence, Set

from w2v2.errors import W2v2Error
from w2v2.train.config import PretrainingConfig, TrainConfig
from w2v2.train.trainer import UpdateResult

logger = logging.getLogger(__name__)

# Consecutive skipped (non-finite) updates before the run warns, and before it stops.
NONFINITE_WARN, NONFINITE_STOP = 3, 50
# Utterances named per non-finite batch, so that a big batch does not flood the log.
NAMED_UTTERANCES = 20


class TrainingDiverged(W2v2Error):
    """NONFINITE_STOP updates in a row had non-finite losses or gradients."""


def nonfinite_batches(batches: Sequence[Dict[str, Any]], paths: Sequence[str]) -> List[str]:
    """Manifest paths of the utterances in `batches` (this rank's share of an update), filler batches left out."""
    return [paths[int(i)] for batch in batches if not bool(batch.get("repeated", False))
            for i in batch["id"].tolist()]


class HealthMonitor:
    """Watches each update: codebook collapse, a trivially solved contrastive task, non-finite losses."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.pretraining = isinstance(cfg, PretrainingConfig)
        self.num_vars = cfg.model.latent_vars * cfg.model.latent_groups if isinstance(cfg, PretrainingConfig) else 0
        self.nonfinite_streak = 0
        self.warned: Set[str] = set()

    def observe(self, result: UpdateResult, num_updates: int, utterances: Sequence[str] = (),
                loss_scaling: bool = False) -> None:
        """Check one update's summed logs; `utterances` are this rank's utterances of a skipped update.
        Raises TrainingDiverged after NONFINITE_STOP non-finite updates in a row."""
        stats = result.stats
        loss = stats.get("loss", 0.0)
        loss_ok = math.isfinite(loss)
        self.nonfinite_streak = 0 if (result.stepped and loss_ok) else self.nonfinite_streak + 1
        if not loss_ok or (not result.stepped and not loss_scaling):
            # a loss scaler's overflows are routine (the trainer reports them); anything else is not
            shown = ", ".join(utterances[:NAMED_UTTERANCES]) + (" ..." if len(utterances) > NAMED_UTTERANCES else "")
            what = f"the loss is {loss}" if not loss_ok else f"the gradient norm is {result.grad_norm}"
            logger.warning("non-finite update after update %d: %s, so it was skipped; its batches on this process "
                           "held %d utterances: %s", num_updates, what, len(utterances), shown or "(none)")
        if self.nonfinite_streak == NONFINITE_WARN:
            logger.warning("%d updates in a row had a non-finite loss or gradient (update %d): check the learning "
                           "rate, %sthe input audio.", self.nonfinite_streak, num_updates,
                           "the fp16 loss scale and " if loss_scaling else "")
        if self.nonfinite_streak >= NONFINITE_STOP:
            raise TrainingDiverged(f"training diverged: {NONFINITE_STOP} updates in a row had non-finite losses or "
                                   f"gradients (up to update {num_updates}).")
        if self.pretraining and stats.get("batches"):
            self._check_pretraining(stats, num_updates)

    def _check_pretraining(self, stats: dict, num_updates: int) -> None:
        batches = stats["batches"]
        code_ppl = stats.get("code_perplexity", 0.0) / batches
        if self.num_vars and "code_perplexity" in stats and code_ppl < max(2.0, 0.02 * self.num_vars):
            self._warn("collapse", f"codebook perplexity collapsed to {code_ppl:.1f} of {self.num_vars} entries at "
                       f"update {num_updates}: the quantizer uses almost no codes. Raise the diversity loss weight "
                       "(criterion.loss_weights[0]) or lower the learning rate.")
        accuracy = stats.get("correct", 0.0) / stats["count"] if stats.get("count") else 0.0
        loss = stats.get("loss", 0.0) / stats["sample_size"] if stats.get("sample_size") else 1.0
        if accuracy > 0.99 or loss < 0.01:
            self._warn("trivial", f"the contrastive task looks solved (accuracy {accuracy:.3f}, loss {loss:.4f} at "
                       f"update {num_updates}): the usual cause is a collapsed codebook or distractors equal to "
                       "the target; the representations are likely useless.")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            logger.warning(message)
