"""Model configs with fairseq's field names and defaults (`model._name` wav2vec2 / wav2vec_ctc)."""

from __future__ import annotations

import ast
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple, Type, TypeVar

from w2v2.errors import W2v2Error

ConvSpec = List[Tuple[int, int, int]]
C = TypeVar("C", bound="_FromDict")


class _FromDict:
    """Builds a config dataclass from a plain dict, refusing unknown keys by name."""

    # fairseq keys that exist in saved configs but change nothing in our models.
    IGNORED: Tuple[str, ...] = ()

    @classmethod
    def from_dict(cls: Type[C], values: Mapping[str, Any], where: str = "model") -> C:
        """Return the config for `values`; unknown keys are errors naming `where.key`."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key == "_name" or key in cls.IGNORED:
                continue
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" Did you mean `{where}.{close[0]}`?" if close else ""
                raise W2v2Error(f"`{where}.{key}` is not a known {cls.__name__} field.{hint}")
            kwargs[key] = value
        config = cls(**kwargs)
        config.validate(where)
        return config

    def to_dict(self) -> dict:
        """Plain nested dict, as fairseq stores a config group in a checkpoint (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def validate(self, where: str) -> None:
        """Normalise string-typed fields and check values; raises W2v2Error."""


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
    if not layers or any(len(layer) != 3 or min(layer) <= 0 for layer in layers):
        raise W2v2Error(f"`{where}` must hold positive (dim, kernel, stride) triples, but is {spec!r}.")
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


def _as_float_tuple(value: Any, where: str, size: int) -> Tuple[float, ...]:
    """Accept `(2,0.5,0.999995)` as a string (legacy args) or a list."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (SyntaxError, ValueError) as error:
            raise W2v2Error(f"`{where}` must be a tuple of {size} numbers, but is {value!r} instead.") from error
    try:
        result = tuple(float(v) for v in value)
    except TypeError as error:
        raise W2v2Error(f"`{where}` must be a tuple of {size} numbers, but is {value!r} instead.") from error
    if len(result) != size:
        raise W2v2Error(f"`{where}` must have {size} numbers, but is {value!r} instead.")
    return result


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise W2v2Error(f"`{where}` {message}")


@dataclass
class MaskConfig:
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


@dataclass
class Wav2Vec2Config(MaskConfig, _FromDict):
    """fairseq's `wav2vec2` model group; defaults are fairseq's (the BASE model)."""

    IGNORED = ("fp16", "checkpoint_activations", "offload_activations", "min_params_to_wrap",
               "adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx", "depthwise_conv_kernel_size",
               "attn_type", "max_positions", "pos_enc_type")

    extractor_mode: str = "default"  # "default": group norm in block 0; "layer_norm": LN in every block
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_type: str = "transformer"
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
    quantize_input: bool = False
    same_quantizer: bool = False
    target_glu: bool = False
    feature_grad_mult: float = 1.0
    quantizer_depth: int = 1
    quantizer_factor: int = 3
    latent_vars: int = 320
    latent_groups: int = 2
    latent_dim: int = 0  # 0 → final_dim
    num_negatives: int = 100
    negatives_from_everywhere: bool = False
    cross_sample_negatives: int = 0
    codebook_negatives: int = 0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    pos_conv_depth: int = 1
    latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    required_seq_len_multiple: int = 2
    crop_seq_to_multiple: int = 1

    def validate(self, where: str = "model") -> None:
        self.latent_temp = _as_float_tuple(self.latent_temp, f"{where}.latent_temp", 3)  # type: ignore[assignment]
        parse_conv_layers(self.conv_feature_layers, f"{where}.conv_feature_layers")
        _require(self.extractor_mode in ("default", "layer_norm"), f"{where}.extractor_mode",
                 f"must be 'default' or 'layer_norm', but is {self.extractor_mode!r} instead.")
        _require(self.activation_fn == "gelu", f"{where}.activation_fn",
                 f"must be 'gelu' (the only activation wav2vec 2.0 uses), but is {self.activation_fn!r}.")
        _require(self.layer_type == "transformer", f"{where}.layer_type",
                 f"must be 'transformer'; {self.layer_type!r} (conformer) is not supported.")
        _require(self.pos_conv_depth == 1, f"{where}.pos_conv_depth",
                 f"must be 1 (wav2vec 2.0); {self.pos_conv_depth} (data2vec) is not supported.")
        for name in ("quantize_input", "same_quantizer"):
            _require(not getattr(self, name), f"{where}.{name}", "is not supported; it must be false.")
        _require(self.codebook_negatives == 0, f"{where}.codebook_negatives", "is not supported; it must be 0.")
        _require(self.quantizer_depth == 1, f"{where}.quantizer_depth", "is not supported; it must be 1.")
        _require(self.encoder_embed_dim % self.encoder_attention_heads == 0, f"{where}.encoder_embed_dim",
                 f"({self.encoder_embed_dim}) must be divisible by encoder_attention_heads "
                 f"({self.encoder_attention_heads}).")
        for name in ("mask_selection", "mask_channel_selection"):
            _require(getattr(self, name) in ("static", "uniform", "normal", "poisson"), f"{where}.{name}",
                     f"must be static, uniform, normal or poisson, but is {getattr(self, name)!r}.")

    @property
    def conv_layers(self) -> ConvSpec:
        """The parsed `conv_feature_layers`."""
        return parse_conv_layers(self.conv_feature_layers)


# Fine-tuning fields that replace the pretrained model's own values (fairseq's arg_overrides).
FINETUNE_OVERRIDES = {
    "dropout": "dropout", "activation_dropout": "activation_dropout", "dropout_input": "dropout_input",
    "attention_dropout": "attention_dropout", "mask_length": "mask_length", "mask_prob": "mask_prob",
    "require_same_masks": "require_same_masks", "mask_dropout": "mask_dropout",
    "mask_selection": "mask_selection", "mask_other": "mask_other", "no_mask_overlap": "no_mask_overlap",
    "mask_channel_length": "mask_channel_length", "mask_channel_prob": "mask_channel_prob",
    "mask_channel_before": "mask_channel_before", "mask_channel_selection": "mask_channel_selection",
    "mask_channel_other": "mask_channel_other", "no_mask_channel_overlap": "no_mask_channel_overlap",
    "encoder_layerdrop": "layerdrop", "feature_grad_mult": "feature_grad_mult",
}


@dataclass
class Wav2Vec2CtcConfig(MaskConfig, _FromDict):
    """fairseq's `wav2vec_ctc` model group: a pretrained model plus a letter projection."""

    IGNORED = ("checkpoint_activations", "offload_activations", "min_params_to_wrap", "ddp_backend",
               "data", "drop_path", "update_alibi", "load_ema", "layer_type", "adp_num", "adp_dim",
               "adp_act_fn", "adp_trf_idx", "freeze_regex", "zero_mask")

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
    normalize: bool = False  # must agree with the pretraining task's normalize
    blank_weight: float = 0.0  # added to the blank logit
    blank_mode: str = "add"
    layer_decay: float = 1.0
    w2v_args: Optional[Any] = field(default=None, repr=False)  # the pretraining cfg (a whole config dict)

    def validate(self, where: str = "model") -> None:
        _require(self.blank_mode == "add", f"{where}.blank_mode", f"must be 'add', but is {self.blank_mode!r}.")
        _require(self.layer_decay == 1.0, f"{where}.layer_decay", "is not supported; it must be 1.0.")

    def override(self, pretrained: Wav2Vec2Config) -> Wav2Vec2Config:
        """The pretrained config with this config's fine-tuning values put in."""
        values = {ours: getattr(self, theirs) for ours, theirs in FINETUNE_OVERRIDES.items()}
        return dataclasses.replace(pretrained, **values)
