"""The two criteria: wav2vec 2.0's contrastive loss and CTC, with fairseq's logging outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import editdistance
import torch
import torch.nn.functional as F

from w2v2.data.dictionary import Dictionary
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model


@dataclass
class LossOutput:
    """A criterion's summed loss, what it is normalised by, and the numbers to log."""

    loss: torch.Tensor
    sample_size: int
    logs: Dict[str, Any] = field(default_factory=dict)


def contrastive_loss(
    model: Wav2Vec2Model, net_output: Dict[str, Any], loss_weights: Sequence[float] = (0.1, 10.0), nsentences: int = 0,
    log_keys: Sequence[str] = ("prob_perplexity", "code_perplexity", "temp"),
) -> LossOutput:
    """InfoNCE (summed) + weights · sample_size · [diversity, feature penalty]; sample_size = masked frames.
    The model outputs named in `log_keys` are logged (fairseq's `criterion.log_keys`)."""
    logits = model.get_logits(net_output).float()  # (B*M, 1+K)
    target = logits.new_zeros(logits.size(0), dtype=torch.long)
    loss = F.cross_entropy(logits, target, reduction="sum")
    sample_size = target.numel()
    terms = [loss.detach().clone()]
    extra = model.get_extra_losses(net_output)
    weights = list(loss_weights) * len(extra) if len(loss_weights) == 1 else list(loss_weights)
    for penalty, weight in zip(extra, weights):
        if weight != 0 and penalty is not None:
            weighted = weight * penalty.float() * sample_size
            loss = loss + weighted
            terms.append(weighted.detach())
    logs: Dict[str, Any] = {"loss": loss.item(), "ntokens": sample_size, "nsentences": nsentences,
                            "sample_size": sample_size}
    for key in log_keys:
        if key in net_output:
            logs[key] = float(net_output[key].detach()) if torch.is_tensor(net_output[key]) else float(net_output[key])
    if len(terms) > 1:
        logs.update({f"loss_{i}": t.item() for i, t in enumerate(terms)})
    logs["correct"], logs["count"] = contrastive_accuracy(logits)
    return LossOutput(loss, sample_size, logs)


def contrastive_accuracy(logits: torch.Tensor) -> Tuple[int, float]:
    """(rows whose positive scores highest, rows); rows where all scores tie do not count as correct."""
    if logits.numel() == 0:
        return 0, 0.0
    with torch.no_grad():
        best = logits.argmax(-1) == 0
        worst = logits.argmin(-1) == 0
        return int(best.sum()) - int((best & worst).sum()), float(best.numel())


def ctc_loss(
    model: Wav2Vec2Ctc,
    net_output: Dict[str, Any],
    target: torch.Tensor,
    dictionary: Dictionary,
    sentence_avg: bool = True,
    zero_infinity: bool = True,
    target_lengths: torch.Tensor | None = None,
) -> LossOutput:
    """Summed CTC loss (blank 0); sample_size = utterances with `sentence_avg`, else target letters."""
    lprobs = model.get_normalized_probs(net_output, log_probs=True).contiguous()  # (T, B, V)
    padding = net_output["padding_mask"]
    if padding is not None:
        input_lengths = (~padding).long().sum(-1)
    else:
        input_lengths = lprobs.new_full((lprobs.size(1),), lprobs.size(0), dtype=torch.long)
    keep = (target != dictionary.pad()) & (target != dictionary.eos())
    if target_lengths is None:
        target_lengths = keep.sum(-1)
    loss = F.ctc_loss(lprobs, target.masked_select(keep), input_lengths, target_lengths,
                      blank=dictionary.bos(), reduction="sum", zero_infinity=zero_infinity)
    ntokens = int(target_lengths.sum())
    sample_size = target.size(0) if sentence_avg else ntokens
    logs: Dict[str, Any] = {"loss": loss.item(), "ntokens": ntokens, "nsentences": target.size(0),
                            "sample_size": sample_size}
    if not model.training:
        logs.update(error_counts(lprobs, input_lengths, target, dictionary))
    return LossOutput(loss, sample_size, logs)


def letters_to_words(units: str) -> str:
    """fairseq's `letter` post-processing: `H I | T H E R E |` -> `HI THERE`."""
    return units.replace(" ", "").replace("|", " ").strip()


def greedy_decode(lprobs: torch.Tensor, input_lengths: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """Best path per utterance: argmax, merge repeats, drop blanks. `lprobs` is (T, B, V)."""
    best = lprobs.transpose(0, 1).argmax(-1).cpu()
    hyps = []
    for row, length in zip(best, input_lengths.tolist()):
        tokens = row[:length].unique_consecutive()
        hyps.append(tokens[tokens != blank].tolist())
    return hyps


def error_counts(
    lprobs: torch.Tensor, input_lengths: torch.Tensor, target: torch.Tensor, dictionary: Dictionary
) -> Dict[str, Any]:
    """Letter and word edit distances of greedy hypotheses, as fairseq's CTC validation counts them."""
    counts = {"c_errors": 0, "c_total": 0, "w_errors": 0, "wv_errors": 0, "w_total": 0}
    hyps_text = []
    for hyp, ref in zip(greedy_decode(lprobs.float(), input_lengths, dictionary.bos()), target.cpu()):
        ref_ids = ref[(ref != dictionary.pad()) & (ref != dictionary.eos())].tolist()
        counts["c_errors"] += editdistance.eval(hyp, ref_ids)
        counts["c_total"] += len(ref_ids)
        hyp_words = letters_to_words(dictionary.string(hyp)).split()
        ref_words = letters_to_words(dictionary.string(ref_ids)).split()
        distance = editdistance.eval(hyp_words, ref_words)
        counts["w_errors"] += distance
        counts["wv_errors"] += distance
        counts["w_total"] += len(ref_words)
        hyps_text.append(" ".join(hyp_words))
    counts["hypotheses"] = hyps_text
    return counts


def bits(loss_sum: float, sample_size: float) -> float:
    """fairseq's logged loss: summed nats per sample, in bits."""
    return loss_sum / max(sample_size, 1) / math.log(2)
