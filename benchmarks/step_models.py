"""The models, batches and training steps bench_step.py compares: ours, transformers' and fairseq's (run in a
fairseq interpreter such as ../shared/oracle's), with the same weights.

Configs follow the recipes (BASE pretraining: wav2vec2_base_librispeech.yaml; fine-tuning: base_100h.yaml)
with LayerDrop off on both sides, because dropped layers would make step times a lottery.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from w2v2.data.dictionary import Dictionary
from w2v2.interop.checkpoints import build_model, checkpoint_dict
from w2v2.interop.hf_mapping import hf_config, weights_to_hf
from w2v2.models.feature_cache import FeatureCache
from w2v2.models.masking import compute_mask_indices
from w2v2.train.losses import contrastive_loss, ctc_loss
from w2v2.train.optim import AdamConfig, build_optimizer

SAMPLE_RATE = 16000
LETTERS = list("|ETAONIHSRDLUMWCFGYPBVK'XJQZ")
SIZES: Dict[str, Dict[str, Any]] = {
    "base": {},  # fairseq's defaults are the BASE model
    # CNN narrower than the encoder, as in BASE (512 -> 768), so both toolkits have the feature projection
    "small": dict(encoder_layers=4, encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_attention_heads=4,
                  conv_feature_layers="[(128,10,5)]+[(128,3,2)]*4+[(128,2,2)]*2", conv_pos=32, conv_pos_groups=8),
}
PRETRAIN = dict(quantize_targets=True, final_dim=256, dropout_input=0.1, dropout_features=0.1, feature_grad_mult=0.1,
                encoder_layerdrop=0.0)
FINETUNE = dict(apply_mask=True, mask_prob=0.65, mask_channel_prob=0.5, mask_channel_length=64, layerdrop=0.0,
                activation_dropout=0.1, feature_grad_mult=0.0, freeze_finetune_updates=0)
ADAM = {"pretrain": dict(adam_betas="(0.9,0.98)", adam_eps=1e-6, weight_decay=0.01, lr=[5e-4]),
        "ctc": dict(adam_betas="(0.9,0.98)", adam_eps=1e-8, weight_decay=0.0, lr=[5e-5])}


@dataclass
class Batch:
    """Waveforms (B, L), their padding (True = padding), and the per-task extras."""

    source: torch.Tensor
    padding: Optional[torch.Tensor]
    seconds: float  # unpadded audio in the batch
    padded_seconds: float


def make_batch(batch: int, seconds: float, mixed: bool, seed: int = 0) -> Batch:
    """`batch` utterances of `seconds`, or (mixed) lengths spread evenly from `seconds` down to 60 % of it."""
    generator = torch.Generator().manual_seed(seed)
    longest = int(seconds * SAMPLE_RATE)
    lengths = [longest] * batch
    if mixed and batch > 1:
        lengths = [int(longest * (1 - 0.4 * i / (batch - 1))) for i in range(batch)]
    source = torch.randn(batch, longest, generator=generator) * 0.1
    padding = torch.arange(longest)[None, :] >= torch.tensor(lengths)[:, None]
    source = source.masked_fill(padding, 0.0)
    return Batch(source, padding if mixed else None, sum(lengths) / SAMPLE_RATE, batch * longest / SAMPLE_RATE)


def _groups(size: str, task: str) -> Dict[str, Any]:
    network = {"_name": "wav2vec2", **SIZES[size], **(PRETRAIN if task == "pretrain" else {"quantize_targets": True})}
    if task == "pretrain":
        return {"model": network}
    return {"model": {"_name": "wav2vec_ctc", **FINETUNE, "w2v_args": {"model": network}}}


def build_ours(size: str, task: str, options: Dict[str, Any]) -> torch.nn.Module:
    """Our model for `task` (pretrain / ctc), seeded, in train mode; `options` are extra model keys."""
    groups = _groups(size, task)
    groups["model"].update(options)
    torch.manual_seed(0)
    dim = SIZES[size].get("encoder_embed_dim", 768)
    weights = {"w2v_encoder.proj.weight": torch.empty(len(Dictionary(LETTERS)), dim)}
    model = build_model(groups, "bench_step", weights if task == "ctc" else None)
    return model.train()


def build_hf(ours: torch.nn.Module, task: str, attention: str) -> torch.nn.Module:
    """transformers' model with our config and weights (the mapping of w2v2.interop.hf_mapping)."""
    import transformers

    ctc = task == "ctc"
    network = ours.w2v_encoder.w2v_model if ctc else ours
    state = ours.state_dict()
    config = hf_config(network, ours.cfg if ctc else None, len(Dictionary(LETTERS)) if ctc else None)
    weights = weights_to_hf(state, ctc, network.cfg.extractor_mode == "layer_norm", network.cfg.encoder_embed_dim,
                            keep_mask_emb=True, where="bench_step").weights
    cls = transformers.Wav2Vec2ForCTC if ctc else transformers.Wav2Vec2ForPreTraining
    model = cls(transformers.Wav2Vec2Config(**config, attn_implementation=attention))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "masked_spec_embed" not in k]:
        raise RuntimeError(f"weights did not map onto transformers' model: missing {missing}, unexpected {unexpected}")
    if ctc:
        model.freeze_feature_encoder()  # what feature_grad_mult 0 means in transformers' fine-tuning recipes
    return model.train()


def build_fairseq(ours: torch.nn.Module) -> torch.nn.Module:
    """fairseq's model of `ours`: written as our checkpoint, read back by fairseq's own loader (what its
    fine-tuning and infer.py do), in train mode; the parameter names are fairseq's, so the weights are ours."""
    from fairseq import checkpoint_utils

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench_step.pt"
        state = checkpoint_dict(ours)
        state["task_state"] = {}  # our pickled stand-in of fairseq's Dictionary clashes with the real one here
        if hasattr(ours, "w2v_encoder"):  # fairseq reads the letters from task.data instead
            (Path(folder) / "dict.ltr.txt").write_text("".join(f"{letter} 1\n" for letter in LETTERS))
            state["cfg"]["task"]["labels"] = "ltr"
            pretraining = state["cfg"]["model"]["w2v_args"]
            pretraining["task"] = {"_name": "audio_pretraining", "normalize": False, "data": folder, **(pretraining.get("task") or {})}
        # this model was built without the other groups that a run links its model keys to: drop the unset
        # links, so that fairseq resolves them in the stored groups, and give the task a data folder
        network = state["cfg"]["model"]
        for item in dataclasses.fields(ours.cfg):
            if item.metadata.get("link") and network.get(item.name, 0) is None:
                del network[item.name]
        state["cfg"]["task"]["data"] = folder
        torch.save(state, path)
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    model = models[0]
    model.fairseq_task = task  # fairseq's criteria take the task (the CTC one reads its dictionary)
    return model.train()


def _frame_padding(lengths_fn: Callable[[torch.Tensor], torch.Tensor], batch: Batch, frames: int
                   ) -> Optional[torch.Tensor]:
    if batch.padding is None:
        return None
    lengths = lengths_fn((~batch.padding).long().sum(-1))
    return torch.arange(frames)[None, :] >= lengths[:, None]


def _targets(batch: Batch, frames: int, dictionary: Dictionary, seed: int = 1) -> List[torch.Tensor]:
    """Random letter sequences of about one letter per 3.3 frames (15 letters/s of speech)."""
    generator = torch.Generator().manual_seed(seed)
    count = batch.source.size(0)
    rows = []
    for i in range(count):
        share = 1.0 if batch.padding is None else float((~batch.padding[i]).float().mean())
        length = max(1, int(frames * share / 3.3))
        rows.append(torch.randint(dictionary.nspecial, len(dictionary), (length,), generator=generator))
    return rows


def make_step(impl: str, task: str, model: torch.nn.Module, batch: Batch, device: torch.device,
              dtype: Optional[torch.dtype]) -> Callable[[], float]:
    """A closure running forward + backward + AdamW once and returning the loss."""
    dictionary = Dictionary(LETTERS)
    adam = ADAM[task]
    if impl in ("ours", "cached"):
        optimizer = build_optimizer(model, AdamConfig(**adam))
        extractor = (model.w2v_encoder.w2v_model if task == "ctc" else model).feature_extractor
        lengths_fn = extractor.output_lengths
    elif impl == "fairseq":
        from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

        # fairseq's `adam` optimizer as its trainer builds it (on the CPU: its own per-parameter Adam)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = FairseqAdam(FairseqAdamConfig(**adam), params).optimizer
        network = model.w2v_encoder.w2v_model if task == "ctc" else model
        lengths_fn = network._get_feat_extract_output_lengths
    else:
        betas = tuple(float(b) for b in adam["adam_betas"].strip("()").split(","))
        params = [p for p in model.parameters() if p.requires_grad]
        # transformers' Trainer default optimizer (adamw_torch_fused) for torch >= 2.8
        optimizer = torch.optim.AdamW(params, lr=adam["lr"][0], betas=betas, eps=adam["adam_eps"],
                                      weight_decay=adam["weight_decay"], fused=True)
        lengths_fn = model._get_feat_extract_output_lengths
    frames = int(lengths_fn(torch.tensor(batch.source.size(1))))
    frame_padding = _frame_padding(lengths_fn, batch, frames)
    source = batch.source.to(device)
    padding = batch.padding.to(device) if batch.padding is not None else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else None
    forward = _ctc_forward if task == "ctc" else _pretrain_forward
    run = forward(impl, model, source, padding, frame_padding, frames, batch, dictionary, device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast():
                loss = run()
        else:
            loss = run()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _ctc_forward(impl, model, source, padding, frame_padding, frames, batch, dictionary, device):
    rows = _targets(batch, frames, dictionary)
    lengths = torch.tensor([len(r) for r in rows])
    if impl == "fairseq":
        from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig

        criterion = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), model.fairseq_task)
        target = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=dictionary.pad()).to(device)
        mask = padding if padding is not None else torch.zeros_like(source, dtype=torch.bool)
        sample = {"id": torch.arange(source.size(0)), "net_input": {"source": source, "padding_mask": mask},
                  "target": target, "target_lengths": lengths, "ntokens": int(lengths.sum())}
        return lambda: criterion(model, sample)[0]
    if impl in ("ours", "cached"):
        target = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=dictionary.pad()).to(device)
        features = None
        if impl == "cached":  # common.feature_cache: filled here, so that every counted and timed step hits
            features = FeatureCache().features(model.w2v_encoder.w2v_model.feature_extractor, source, padding)
        return lambda: ctc_loss(model, model(source, padding, cnn_features=features), target, dictionary,
                                target_lengths=lengths).loss
    labels = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-100).to(device)
    mask = None if padding is None else (~padding).long()
    return lambda: model(source, attention_mask=mask, labels=labels).loss


def _pretrain_forward(impl, model, source, padding, frame_padding, frames, batch, dictionary, device):
    if impl == "hf":
        mask_prob, mask_length = model.config.mask_time_prob, model.config.mask_time_length
    else:  # ours keeps the config, fairseq's model the two values
        mask_prob, mask_length = (model.cfg.mask_prob, model.cfg.mask_length) if impl == "ours" else (
            model.mask_prob, model.mask_length)

    def draw_mask() -> torch.Tensor:
        shape = (batch.source.size(0), frames)
        return torch.from_numpy(compute_mask_indices(shape, frame_padding, mask_prob, mask_length, min_masks=2,
                                                     require_same_masks=True)).to(device)

    if impl == "ours":
        nsentences = batch.source.size(0)
        return lambda: contrastive_loss(model, model(source, padding, mask_indices=draw_mask()), (0.1, 10.0),
                                        nsentences).loss
    if impl == "fairseq":
        from fairseq.criterions.wav2vec_criterion import Wav2vecCriterion

        criterion = Wav2vecCriterion(model.fairseq_task, infonce=True, loss_weights=[0.1, 10.0])
        ids = torch.arange(source.size(0))
        return lambda: criterion(model, {"id": ids, "net_input": {"source": source, "padding_mask": padding,
                                                                  "mask_indices": draw_mask()}})[0]
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

    attention = None if padding is None else (~padding).long()

    def run() -> torch.Tensor:
        mask = draw_mask()
        negatives = _sample_negative_indices((mask.size(0), frames), model.config.num_negatives, mask.cpu().numpy())
        return model(source, attention_mask=attention, mask_time_indices=mask,
                     sampled_negative_indices=torch.from_numpy(negatives).long().to(device)).loss

    return run
