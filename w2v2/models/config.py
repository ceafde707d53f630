"""Model configs with fairseq's field names and defaults (`model._name` wav2vec2 / wav2vec_ctc)."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from w2v2.errors import W2v2Error
from w2v2.schema import Group, default_only, linked, no_effect, one_of, require

ConvSpec = List[Tuple[int, int, int]]
# Fields of either model group that are probabilities (masking rates, dropout and layer-drop rates).
PROBABILITIES = ("mask_prob", "mask_channel_prob", "mask_dropout", "dropout", "attention_dropout", "activation_dropout",
                 "encoder_layerdrop", "layerdrop", "dropout_input", "dropout_features", "final_dropout")
MASK_DISTRIBUTIONS = ("static", "uniform", "normal", "poisson")
ADAPTERS = "adapters are not implemented"
DATA2VEC = "a data2vec option"


def parse_conv_layers(spec: str, where: str = "model.conv_feature_layers") -> ConvSpec:
    """Parse fairseq's `[(dim, kernel, stride)]*n + ...` string without `eval`."""
    try:
        value = _literal_with_ops(ast.parse(spec, mode="eval").body)
        layers = [tuple(int(v) for v in layer) for layer in value]
    except (SyntaxError, ValueError, TypeError) as error:
        raise W2v2Error(
            f"`{where}` must be a list of (dim, kernel, stride) tuples such as "
            f"\"[(512,10,5)]+[(512,3,2)]*4\", but is {spec!r} instead ({error})."
        ) from error
    require(bool(layers) and all(len(layer) == 3 and min(layer) > 0 for layer in layers), where,
            f"must hold positive (dim, kernel, stride) triples, but is {spec!r}.")
    return layers  # type: ignore[return-value]


def _literal_with_ops(node: ast.AST) -> Any:
    """Evaluate literals joined by `+` and `*` (all that fairseq's conv specs use)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal_with_ops(node.left), _literal_with_ops(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal_with_ops(item) for item in node.elts]
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    raise ValueError(f"unexpected {type(node).__name__}")


@dataclass
class MaskConfig(Group):
    """Time and channel masking fields shared by pretraining and fine-tuning configs."""

    mask_length: int = 10  # span length in frames
    mask_prob: float = 0.65  # expected fraction of frames that start a span, before overlaps
    mask_selection: str = "static"  # span length distribution: static, uniform, normal, poisson
    mask_other: float = 0.0  # second parameter of that distribution
    no_mask_overlap: bool = False  # keep spans apart
    mask_min_space: int = 1  # gap between spans when no_mask_overlap
    require_same_masks: bool = True  # every utterance gets the batch's smallest mask count
    mask_dropout: float = 0.0  # fraction of masked frames unmasked again at random
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_before: bool = False  # channel masking before time masking
    mask_channel_selection: str = "static"
    mask_channel_other: float = 0.0
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1

    def check(self, where: str) -> None:
        for name in ("mask_selection", "mask_channel_selection"):
            one_of(getattr(self, name), MASK_DISTRIBUTIONS, f"{where}.{name}")
        for name in PROBABILITIES:
            value = getattr(self, name, 0.0)
            require(0.0 <= value <= 1.0, f"{where}.{name}", f"is a probability, so it must be between 0 and 1, but "
                    f"is {value} instead.")
        for name in ("mask_length", "mask_channel_length"):
            require(getattr(self, name) >= 1, f"{where}.{name}", f"must be at least 1 frame, but is "
                    f"{getattr(self, name)} instead.")


@dataclass
class Wav2Vec2Config(MaskConfig):
    """fairseq's `wav2vec2` model group; defaults are fairseq's (the BASE model)."""

    LEGACY = {"offload_activations": None, "min_params_to_wrap": None}  # fine-tuning overrides of older fairseq

    _name: str = "wav2vec2"
    extractor_mode: str = "default"  # "default": group norm in block 0; "layer_norm": LN in every block
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = default_only("gelu", "wav2vec 2.0 uses gelu")
    layer_type: str = default_only("transformer", "conformer layers are not implemented")
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0
    final_dim: int = 0  # 0 → encoder_embed_dim
    layer_norm_first: bool = False  # pre-LN (LARGE) instead of post-LN (BASE)
    conv_feature_layers: str = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    conv_bias: bool = False
    logit_temp: float = 0.1
    quantize_targets: bool = False
    quantize_input: bool = default_only(False, "quantized encoder input is not implemented")
    same_quantizer: bool = default_only(False, "it only matters with quantize_input")
    target_glu: bool = False
    feature_grad_mult: float = 1.0
    quantizer_depth: int = default_only(1, "stacked quantizers are not implemented")
    quantizer_factor: int = no_effect(3)  # only used with quantizer_depth > 1
    latent_vars: int = 320
    latent_groups: int = 2
    latent_dim: int = 0  # 0 → final_dim
    num_negatives: int = 100
    negatives_from_everywhere: bool = False
    cross_sample_negatives: int = 0
    codebook_negatives: int = default_only(0, "codebook distractors are not implemented")
    conv_pos: int = 128
    conv_pos_groups: int = 16
    pos_conv_depth: int = default_only(1, "stacked positional convolutions are data2vec's")
    latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    max_positions: int = no_effect(100000)  # conformer positions
    checkpoint_activations: bool = False  # recompute each Transformer layer in backward: less memory, more compute
    required_seq_len_multiple: int = 2
    crop_seq_to_multiple: int = 1
    depthwise_conv_kernel_size: int = no_effect(31)  # conformer
    attn_type: str = no_effect("")  # conformer
    pos_enc_type: str = no_effect("abs")  # conformer
    fp16: bool = no_effect(False)  # conformer
    adp_num: int = default_only(-1, ADAPTERS)
    adp_dim: int = no_effect(64)
    adp_act_fn: str = no_effect("relu")
    adp_trf_idx: str = no_effect("all")

    def check(self, where: str) -> None:
        super().check(where)
        require(len(self.latent_temp) == 3, f"{where}.latent_temp",
                f"must be three numbers (start, floor, decay), but is {list(self.latent_temp)} instead.")
        self.latent_temp = tuple(float(v) for v in self.latent_temp)  # type: ignore[assignment]
        parse_conv_layers(self.conv_feature_layers, f"{where}.conv_feature_layers")
        one_of(self.extractor_mode, ("default", "layer_norm"), f"{where}.extractor_mode")
        require(self.encoder_embed_dim % self.encoder_attention_heads == 0, f"{where}.encoder_embed_dim",
                f"({self.encoder_embed_dim}) must be divisible by encoder_attention_heads "
                f"({self.encoder_attention_heads}).")

    @property
    def conv_layers(self) -> ConvSpec:
        """The parsed `conv_feature_layers`."""
        return parse_conv_layers(self.conv_feature_layers)


# Fine-tuning fields that replace the pretrained model's own values (fairseq's arg_overrides), by the
# pretrained model's name; only the layer drop rate has another name in the fine-tuning group.
FINETUNE_OVERRIDES = ("dropout", "activation_dropout", "dropout_input", "attention_dropout", "mask_length", "mask_prob",
                      "require_same_masks", "mask_dropout", "mask_selection", "mask_other", "no_mask_overlap",
                      "mask_channel_length", "mask_channel_prob", "mask_channel_before", "mask_channel_selection",
                      "mask_channel_other", "no_mask_channel_overlap", "encoder_layerdrop", "feature_grad_mult",
                      "checkpoint_activations")


@dataclass
class Wav2Vec2CtcConfig(MaskConfig):
    """fairseq's `wav2vec_ctc` model group: a pretrained model plus a letter projection."""

    _name: str = "wav2vec_ctc"
    w2v_path: Optional[str] = None  # the pretrained checkpoint
    no_pretrained_weights: bool = False  # build from w2v_args but keep the random init
    apply_mask: bool = False  # mask while training
    mask_prob: float = 0.5
    dropout_input: float = 0.0
    final_dropout: float = 0.0  # before the output projection
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    feature_grad_mult: float = 0.0
    layerdrop: float = 0.0
    freeze_finetune_updates: int = 0  # the pretrained part gets no gradient before this update
    mask_min_space: int = no_effect(1)  # fairseq does not pass it to the pretrained model
    mask_channel_min_space: int = no_effect(1)  # likewise
    normalize: Optional[bool] = linked("task.normalize")  # must agree with the pretraining task's normalize
    data: Optional[str] = no_effect(None, link="task.data")
    drop_path: float = no_effect(0.0)  # data2vec
    update_alibi: bool = no_effect(True)  # data2vec
    zero_mask: bool = no_effect(False)  # data2vec
    load_ema: bool = default_only(False, DATA2VEC)
    offload_activations: bool = no_effect(False)
    min_params_to_wrap: int = no_effect(100000000)  # fully sharded training
    checkpoint_activations: bool = False  # replaces the pretrained model's value, as in fairseq
    ddp_backend: Optional[str] = no_effect(None, link="distributed_training.ddp_backend")
    layer_decay: float = default_only(1.0, "layer-wise lr decay is not implemented")
    layer_type: str = no_effect("transformer")  # data2vec
    adp_num: int = default_only(-1, ADAPTERS)
    adp_dim: int = no_effect(64)
    adp_act_fn: str = no_effect("relu")
    adp_trf_idx: str = no_effect("all")
    freeze_regex: Optional[str] = default_only(None, "freezing parameters by name is not implemented")
    blank_weight: float = 0.0  # added to the blank logit
    blank_mode: str = default_only("add", "only adding blank_weight to the blank logit is implemented")
    w2v_args: Optional[Any] = field(default=None, repr=False)  # the pretraining cfg (a whole config dict)

    def override(self, pretrained: Wav2Vec2Config) -> Wav2Vec2Config:
        """The pretrained config with this config's fine-tuning values put in."""
        values = {name: getattr(self, "layerdrop" if name == "encoder_layerdrop" else name) for name in FINETUNE_OVERRIDES}
        return dataclasses.replace(pretrained, **values)


MODEL_CONFIGS = {"wav2vec2": Wav2Vec2Config, "wav2vec_ctc": Wav2Vec2CtcConfig}
