"""The one table between our (fairseq's) names and transformers' Wav2Vec2 names: weights and config fields.

Weights are `(ours, transformers)` pairs read in both directions: `#` stands for a block or layer number,
and a pair ending in `.` covers every parameter under that module. Tensors are copied unchanged; the few
that exist on one side only are named, with the reason, in `Conversion.added` / `Conversion.dropped`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from w2v2.errors import W2v2Error

Pair = Tuple[str, str]

HF_NETWORK = "wav2vec2."  # transformers' prefix of the wav2vec 2.0 network in both head classes
OUR_CTC_NETWORK = "w2v_encoder.w2v_model."
HF_PROJECTION = HF_NETWORK + "feature_projection.projection."
PRETRAINING_HEADS: List[Pair] = [
    ("quantizer.vars", "quantizer.codevectors"),
    ("quantizer.weight_proj.", "quantizer.weight_proj."),
    ("project_q.", "project_q."),
    ("final_proj.", "project_hid."),
]
CTC_HEAD: List[Pair] = [("w2v_encoder.proj.", "lm_head.")]
# transformers 4.3x+ saves the positional convolution's weight norm under torch's parametrization names;
# older folders (most of the Hub) and our exports use weight_g / weight_v.
WEIGHT_NORM_ALIASES = ((".parametrizations.weight.original0", ".weight_g"),
                       (".parametrizations.weight.original1", ".weight_v"))

# (ours, transformers, transformers' default): model fields with the same meaning on both sides.
NETWORK_FIELDS = (
    ("encoder_layers", "num_hidden_layers", 12),
    ("encoder_embed_dim", "hidden_size", 768),
    ("encoder_ffn_embed_dim", "intermediate_size", 3072),
    ("encoder_attention_heads", "num_attention_heads", 12),
    ("conv_bias", "conv_bias", False),
    ("conv_pos", "num_conv_pos_embeddings", 128),
    ("conv_pos_groups", "num_conv_pos_embedding_groups", 16),
    ("latent_vars", "num_codevectors_per_group", 320),
    ("latent_groups", "num_codevector_groups", 2),
    ("logit_temp", "contrastive_logits_temperature", 0.1),
    ("num_negatives", "num_negatives", 100),
)
# (wav2vec_ctc name, wav2vec2 name, transformers, default): dropout and masking, which a fine-tuning
# config names its own way (fairseq's arg_overrides).
TRAINING_FIELDS = (
    ("dropout", "dropout", "hidden_dropout", 0.1),
    ("attention_dropout", "attention_dropout", "attention_dropout", 0.1),
    ("activation_dropout", "activation_dropout", "activation_dropout", 0.1),
    ("dropout_input", "dropout_input", "feat_proj_dropout", 0.0),
    ("layerdrop", "encoder_layerdrop", "layerdrop", 0.1),
    ("mask_prob", "mask_prob", "mask_time_prob", 0.05),
    ("mask_length", "mask_length", "mask_time_length", 10),
    ("mask_channel_prob", "mask_channel_prob", "mask_feature_prob", 0.0),
    ("mask_channel_length", "mask_channel_length", "mask_feature_length", 10),
)
EXTRACTOR_MODES = (("default", "group"), ("layer_norm", "layer"))
# transformers fields our models have no choice about: the value they must have.
FIXED = (("hidden_act", "gelu"), ("feat_extract_activation", "gelu"), ("layer_norm_eps", 1e-5),
         ("add_adapter", False), ("adapter_attn_dim", None))
# (our field, the value transformers needs, why) for exports: the network, then the pretraining heads.
NETWORK_REFUSALS = (
    ("layer_type", "transformer", "transformers' Wav2Vec2 is a plain Transformer (conformers are another model)"),
    ("activation_fn", "gelu", "transformers' Wav2Vec2 configs here use gelu"),
    ("pos_conv_depth", 1, "transformers' Wav2Vec2 has a single positional convolution"),
    ("crop_seq_to_multiple", 1, "transformers never crops the frame sequence"),
)
HEAD_REFUSALS = (
    ("quantize_targets", True, "transformers' Wav2Vec2ForPreTraining always quantizes its targets"),
    ("target_glu", False, "transformers has no GLU on the contrastive targets"),
)


@dataclass
class Conversion:
    """Converted weights, how many were copied, and each tensor made or left out, with its reason."""

    weights: Dict[str, torch.Tensor]
    copied: int = 0
    added: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)


def weight_pairs(ctc: bool, layer_norm_extractor: bool) -> List[Pair]:
    """Every (ours, transformers) pair of one model kind; the CNN norm sits at `.2.1` (LN) or `.2` (GN)."""
    norm = "feature_extractor.conv_layers.#.2.1." if layer_norm_extractor else "feature_extractor.conv_layers.#.2."
    network = [
        ("mask_emb", "masked_spec_embed"),
        ("feature_extractor.conv_layers.#.0.", "feature_extractor.conv_layers.#.conv."),
        (norm, "feature_extractor.conv_layers.#.layer_norm."),
        ("layer_norm.", "feature_projection.layer_norm."),
        ("post_extract_proj.", "feature_projection.projection."),
        ("encoder.pos_conv.0.", "encoder.pos_conv_embed.conv."),
        ("encoder.layers.#.self_attn.", "encoder.layers.#.attention."),
        ("encoder.layers.#.self_attn_layer_norm.", "encoder.layers.#.layer_norm."),
        ("encoder.layers.#.fc1.", "encoder.layers.#.feed_forward.intermediate_dense."),
        ("encoder.layers.#.fc2.", "encoder.layers.#.feed_forward.output_dense."),
        ("encoder.layers.#.final_layer_norm.", "encoder.layers.#.final_layer_norm."),
        ("encoder.layer_norm.", "encoder.layer_norm."),
    ]
    ours_prefix = OUR_CTC_NETWORK if ctc else ""
    return [(ours_prefix + a, HF_NETWORK + b) for a, b in network] + (CTC_HEAD if ctc else PRETRAINING_HEADS)


def _pattern(name: str) -> str:
    body = r"(\d+)".join(re.escape(part) for part in name.split("#"))
    return body + ("(.+)" if name.endswith(".") else "")


def rename(key: str, pairs: Sequence[Pair], to_hf: bool) -> Optional[str]:
    """`key` in the other naming (ours -> transformers when `to_hf`), or None when no pair covers it."""
    for ours, theirs in pairs:
        source, target = (ours, theirs) if to_hf else (theirs, ours)
        match = re.fullmatch(_pattern(source), key)
        if match:
            groups = list(match.groups())
            name = target.replace("#", groups.pop(0)) if "#" in target else target
            return name + (groups.pop(0) if source.endswith(".") else "")
    return None


def _unmapped_error(where: str, keys: List[str], to_hf: bool) -> W2v2Error:
    shown = ", ".join(keys[:8]) + (" …" if len(keys) > 8 else "")
    place = "transformers' Wav2Vec2" if to_hf else "a fairseq wav2vec 2.0 model (adapters and other heads are not)"
    return W2v2Error(f"{where} holds tensors with no place in {place}, so converting would lose them "
                     f"({len(keys)} in all): {shown}.")


def weights_to_hf(state: Mapping[str, torch.Tensor], ctc: bool, layer_norm_extractor: bool, embed_dim: int,
                  keep_mask_emb: bool, where: str) -> Conversion:
    """Our state dict in transformers' names; `keep_mask_emb` is False when transformers builds none."""
    pairs = weight_pairs(ctc, layer_norm_extractor)
    result = Conversion({})
    unmapped = []
    for key, tensor in state.items():
        if key.endswith("mask_emb") and not keep_mask_emb:
            result.dropped.append(f"{key}: transformers builds no mask embedding when mask_time_prob and "
                                  "mask_feature_prob are both 0, so this model never masks")
            continue
        name = rename(key, pairs, to_hf=True)
        if name is None:
            unmapped.append(key)
        else:
            result.weights[name] = tensor.contiguous()
    if unmapped:
        raise _unmapped_error(where, unmapped, to_hf=True)
    result.copied = len(result.weights)
    if HF_PROJECTION + "weight" not in result.weights:  # our CNN width equals the encoder's: no projection
        dtype = state[(OUR_CTC_NETWORK if ctc else "") + "layer_norm.weight"].dtype
        result.weights[HF_PROJECTION + "weight"] = torch.eye(embed_dim, dtype=dtype)
        result.weights[HF_PROJECTION + "bias"] = torch.zeros(embed_dim, dtype=dtype)
        result.added.append(f"{HF_PROJECTION}weight/bias: identity and zeros, because transformers always "
                            "projects the CNN features and this model has the same width on both sides")
    return result


def weights_from_hf(weights: Mapping[str, torch.Tensor], ctc: bool, layer_norm_extractor: bool, where: str
                    ) -> Conversion:
    """transformers' state dict in our names, refusing tensors we would have to throw away unnoticed."""
    pairs = weight_pairs(ctc, layer_norm_extractor)
    prefix = OUR_CTC_NETWORK if ctc else ""
    result = Conversion({})
    unmapped = []
    for key, tensor in weights.items():
        for alias, name in WEIGHT_NORM_ALIASES:
            key = key.replace(alias, name)
        ours = rename(key, pairs, to_hf=False)
        if ours is None:
            unmapped.append(key)
        else:
            result.weights[ours] = tensor
    if unmapped:
        raise _unmapped_error(where, unmapped, to_hf=False)
    result.copied = len(result.weights)
    projection = prefix + "post_extract_proj."
    weight, bias = result.weights.get(projection + "weight"), result.weights.get(projection + "bias")
    if weight is not None and weight.size(0) == weight.size(1):  # same widths: our model has no projection
        if not (bias is not None and torch.equal(weight, torch.eye(len(weight), dtype=weight.dtype))
                and not bias.any()):
            raise W2v2Error(f"{where}: `feature_projection.projection` maps the CNN's {len(weight)} channels to "
                            "as many, but is not the identity; a fairseq model of equal widths has no projection "
                            "to hold it, so it cannot be imported without changing the outputs.")
        del result.weights[projection + "weight"], result.weights[projection + "bias"]
        result.copied -= 2
        result.dropped.append(f"{HF_PROJECTION}weight/bias: the identity, which a fairseq model of equal widths "
                              "leaves out")
    if prefix + "mask_emb" not in result.weights:
        dim = result.weights[prefix + "encoder.layer_norm.weight"].numel()
        result.weights[prefix + "mask_emb"] = torch.zeros(dim)
        result.added.append(f"{prefix}mask_emb: zeros, because the folder has no masked_spec_embed (its "
                            "mask probabilities are 0, so it is only used if masking is switched on)")
    return result


def hf_config(network: Any, ctc_cfg: Any = None, vocab_size: Optional[int] = None) -> Dict[str, Any]:
    """transformers' config.json for our network (`Wav2Vec2Model`) and, for a CTC model, its config."""
    cfg = network.cfg
    checks = list(NETWORK_REFUSALS) + (list(HEAD_REFUSALS) if ctc_cfg is None else [])
    for name, required, reason in checks:
        value = getattr(cfg, name, required)
        if value != required:
            raise W2v2Error(f"`model.{name}` is {value!r}, which transformers cannot express: {reason}.")
    if ctc_cfg is not None and ctc_cfg.blank_weight != 0:
        raise W2v2Error(f"`model.blank_weight` is {ctc_cfg.blank_weight}, which transformers cannot express: "
                        "Wav2Vec2ForCTC adds nothing to the blank logit.")
    dims, kernels, strides = zip(*network.feature_extractor.conv_spec)
    final_dim = cfg.final_dim or cfg.encoder_embed_dim
    config: Dict[str, Any] = {
        "architectures": ["Wav2Vec2ForCTC" if ctc_cfg is not None else "Wav2Vec2ForPreTraining"],
        "model_type": "wav2vec2", **dict(FIXED),
        "feat_extract_norm": dict(EXTRACTOR_MODES)[cfg.extractor_mode], "do_stable_layer_norm": cfg.layer_norm_first,
        "conv_dim": list(dims), "conv_kernel": list(kernels), "conv_stride": list(strides),
        "proj_codevector_dim": final_dim, "codevector_dim": cfg.latent_dim or final_dim,
        "mask_time_min_masks": 2, "mask_feature_min_masks": 0,  # fairseq's fixed minimum span counts
        "feat_quantizer_dropout": cfg.dropout_features, "apply_spec_augment": True,
    }
    config.update({theirs: getattr(cfg, ours) for ours, theirs, _ in NETWORK_FIELDS})
    config.update({theirs: getattr(cfg, ours) for _, ours, theirs, _ in TRAINING_FIELDS})
    if ctc_cfg is not None:
        config.update(final_dropout=ctc_cfg.final_dropout, apply_spec_augment=ctc_cfg.apply_mask,
                      vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      ctc_loss_reduction="sum", ctc_zero_infinity=True)
    return config


def our_model_group(hf: Mapping[str, Any], ctc: bool, normalize: bool, where: str) -> Dict[str, Any]:
    """Our `model` group (wav2vec2, or wav2vec_ctc holding the wav2vec2 group in `w2v_args`) for config.json."""

    def get(key: str, default: Any) -> Any:
        value = hf.get(key)
        return default if value is None else value

    if hf.get("model_type") != "wav2vec2":
        raise W2v2Error(f"{where}/config.json describes a {hf.get('model_type')!r} model; only transformers' "
                        "wav2vec2 models (model_type 'wav2vec2') can be imported.")
    for key, required in FIXED:
        if hf.get(key, required) != required:
            raise W2v2Error(f"`{key}` in {where}/config.json must be {required!r} for a wav2vec 2.0 model we can "
                            f"build, but is {hf[key]!r} instead.")
    modes = {theirs: ours for ours, theirs in EXTRACTOR_MODES}
    if get("feat_extract_norm", "group") not in modes:
        raise W2v2Error(f"`feat_extract_norm` in {where}/config.json must be 'group' or 'layer', but is "
                        f"{hf['feat_extract_norm']!r} instead.")
    convs = [get(key, default) for key, default in (("conv_dim", [512] * 7), ("conv_kernel", [10, 3, 3, 3, 3, 2, 2]),
                                                     ("conv_stride", [5, 2, 2, 2, 2, 2, 2]))]
    if len({len(values) for values in convs}) != 1:
        raise W2v2Error(f"`conv_dim`, `conv_kernel` and `conv_stride` in {where}/config.json must have one "
                        f"entry per convolution each, but their lengths are {[len(v) for v in convs]}.")
    layers = list(zip(*convs))
    network: Dict[str, Any] = {
        "_name": "wav2vec2", "extractor_mode": modes[get("feat_extract_norm", "group")],
        "conv_feature_layers": "[" + ", ".join(f"({d}, {k}, {s})" for d, k, s in layers) + "]",
        "layer_norm_first": bool(get("do_stable_layer_norm", False)), "quantize_targets": True,
        "final_dim": get("proj_codevector_dim", 256), "latent_dim": get("codevector_dim", 256),
        "dropout_features": get("feat_quantizer_dropout", 0.0),
    }
    network.update({ours: get(theirs, default) for ours, theirs, default in NETWORK_FIELDS})
    network.update({ours: get(theirs, default) for _, ours, theirs, default in TRAINING_FIELDS})
    if not ctc:
        return network
    group = {"_name": "wav2vec_ctc", "final_dropout": get("final_dropout", 0.1), "normalize": normalize,
             "apply_mask": bool(get("apply_spec_augment", True))}
    group.update({ours: get(theirs, default) for ours, _, theirs, default in TRAINING_FIELDS})
    return {**group, "w2v_args": {"model": network}}
