"""Tiny random models of every architecture variant transformers can hold, for the Hugging Face tests."""

from __future__ import annotations

from typing import Any, Dict

import torch

from w2v2.data.dictionary import Dictionary
from w2v2.interop.checkpoints import Model, build_model

BASE = dict(encoder_embed_dim=32, encoder_layers=2, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
            final_dim=16, quantize_targets=True, latent_vars=10, latent_groups=2, num_negatives=5)
VARIANTS: Dict[str, Dict[str, Any]] = {
    # BASE layout: group-norm CNN without bias, post-LN Transformer, even positional kernel
    "base": dict(conv_feature_layers="[(16,10,5)]+[(16,3,2)]*4+[(16,2,2)]*2", conv_pos=8, conv_pos_groups=4),
    # LARGE layout: layer-norm CNN with bias, pre-LN, odd kernel, uneven widths, latent_dim != final_dim
    "large": dict(conv_feature_layers="[(24,10,5),(16,5,3),(24,3,2)]", extractor_mode="layer_norm",
                  layer_norm_first=True, conv_bias=True, conv_pos=7, conv_pos_groups=2, latent_dim=12),
    # CNN as wide as the encoder (no post_extract_proj), group norm with a pre-LN encoder
    "same_width": dict(conv_feature_layers="[(32,10,5),(32,3,2)]", layer_norm_first=True, conv_bias=True,
                       conv_pos=4, conv_pos_groups=8),
}
LETTERS = list("|ETAONIHSRDLUMWCFGYPBVK'XJQZ")


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every tensor distinct from its init (layer norms would be ones and zeros), so swaps show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


def tiny_model(variant: str, ctc: bool = False, normalize: bool = False, **extra: Any) -> Model:
    """A perturbed tiny pretraining model, or CTC model (with a letter dictionary), in eval mode; the same
    one on every call."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _tiny_model(variant, ctc, normalize, **extra)


def _tiny_model(variant: str, ctc: bool, normalize: bool, **extra: Any) -> Model:
    network = {"_name": "wav2vec2", **BASE, **VARIANTS[variant], **({} if ctc else extra)}
    if not ctc:
        model = build_model({"model": network}, "test")
        model.fairseq_cfg = {"task": {"_name": "audio_pretraining", "normalize": normalize}, "model": network}
    else:
        dictionary = Dictionary(LETTERS)
        group = {"_name": "wav2vec_ctc", "normalize": normalize, **extra,
                 "w2v_args": {"task": {"_name": "audio_pretraining", "normalize": normalize}, "model": network}}
        model = build_model({"model": group}, "test", {"w2v_encoder.proj.weight": torch.empty(len(dictionary), 32)})
        model.dictionary = dictionary
        model.fairseq_cfg = {"task": {"_name": "audio_finetuning", "normalize": normalize}, "model": group}
    perturb(model)
    return model.eval()


def padded_batch(samples: int = 8000, seed: int = 1):
    """(source (2, L), padding_mask (2, L)): utterance 1 is zero-padded over its last 30 %."""
    source = torch.randn(2, samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    padding = torch.zeros(2, samples, dtype=torch.bool)
    padding[1, int(samples * 0.7):] = True
    return source.masked_fill(padding, 0.0), padding


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())
