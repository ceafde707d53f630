"""Typed schemas of fairseq's training config groups, with fairseq's field names and defaults.

Every field fairseq 0.12 writes into a checkpoint's `cfg` for these groups is here, so fairseq's
YAML files and saved configs validate unchanged; fields listed under "accepted, ignored" change
nothing in this toolkit. A few fields that fairseq links to other groups with `${...}` default to
None here and are filled by `link_shared_fields` (e.g. `optimizer.lr` from `optimization.lr`).
`validate_train_config` in `config_loading` builds a `TrainConfig` from plain dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from w2v2.errors import W2v2Error
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.train.lr_schedules import LR_SCHEDULER_CONFIGS, LrSchedulerConfig
from w2v2.train.optim import AdamConfig

MISSING = "???"  # OmegaConf's marker of a required value


@dataclass
class CommonConfig:
    """`common`: logging, seed, device and precision."""

    no_progress_bar: bool = False  # log lines instead of a tqdm bar
    log_interval: int = 100  # updates between training log lines
    log_format: Optional[str] = None  # json, none, simple or tqdm; None = tqdm on a terminal, else simple
    log_file: Optional[str] = None  # also write the log to this file
    tensorboard_logdir: Optional[str] = None  # write TensorBoard events here
    seed: int = 1  # seeds Python, NumPy and torch
    cpu: bool = False  # train on the CPU even when an accelerator is present
    bf16: bool = False  # bfloat16 autocast
    fp16: bool = False  # float16 autocast with dynamic loss scaling
    fp16_init_scale: int = 128  # first loss scale
    # overflow-free updates before the loss scale doubles; None = 2**14 / world size / update_freq
    fp16_scale_window: Optional[int] = None
    fp16_scale_tolerance: float = 0.0  # fraction of overflowing updates tolerated before the scale halves
    min_loss_scale: float = 1e-4  # stop training when the scale falls below this
    threshold_loss_scale: Optional[float] = None  # never raise the scale above this
    empty_cache_freq: int = 0  # free the accelerator's cached memory every N updates; 0 = never
    # Accepted, ignored:
    aim_repo: Optional[str] = None
    aim_run_hash: Optional[str] = None
    wandb_project: Optional[str] = None
    azureml_logging: bool = False
    tpu: bool = False
    memory_efficient_bf16: bool = False
    memory_efficient_fp16: bool = False
    fp16_no_flatten_grads: bool = False
    on_cpu_convert_precision: bool = False
    amp: bool = False
    amp_batch_retries: int = 2
    amp_init_scale: int = 128
    amp_scale_window: Optional[int] = None
    user_dir: Optional[str] = None
    all_gather_list_size: int = 16384
    model_parallel_size: int = 1
    quantization_config_path: Optional[str] = None
    profile: bool = False
    reset_logging: bool = False
    suppress_crashes: bool = False
    use_plasma_view: bool = False
    plasma_path: Optional[str] = "/tmp/plasma"

    def validate(self, where: str = "common") -> None:
        """Check choices; raises W2v2Error naming the key."""
        _choice(self.log_format, (None, "json", "none", "simple", "tqdm"), f"{where}.log_format")
        _at_least(self.log_interval, 1, f"{where}.log_interval")


@dataclass
class CheckpointConfig:
    """`checkpoint`: where, when and what to save, and what to restore."""

    save_dir: str = "checkpoints"  # relative to the run directory
    restore_file: str = "checkpoint_last.pt"  # resume from this file (in save_dir unless a path) if it exists
    finetune_from_model: Optional[str] = None  # load only the weights of this file, then start afresh
    reset_dataloader: bool = False  # on restore, start the epoch over
    reset_lr_scheduler: bool = False  # on restore, drop the schedule state
    reset_meters: bool = False  # on restore, drop the logged meters
    reset_optimizer: bool = False  # on restore, drop the optimizer state and the update count
    optimizer_overrides: str = "{}"  # dict literal of optimizer fields to override on restore
    save_interval: int = 1  # save every N epochs
    save_interval_updates: int = 0  # also save every N updates; 0 = never
    keep_interval_updates: int = -1  # keep the last N update checkpoints; -1 = all
    keep_interval_updates_pattern: int = -1  # never delete update checkpoints at multiples of this
    keep_last_epochs: int = -1  # keep the last N epoch checkpoints; -1 = all
    keep_best_checkpoints: int = -1  # keep the N best checkpoints; -1 = only checkpoint_best.pt
    no_save: bool = False  # save nothing
    no_epoch_checkpoints: bool = False  # no checkpoint_{epoch}.pt files
    no_last_checkpoints: bool = False  # no checkpoint_last.pt
    no_save_optimizer_state: bool = False  # leave the optimizer state out of checkpoints
    best_checkpoint_metric: str = "loss"  # validation metric that picks checkpoint_best.pt
    maximize_best_checkpoint_metric: bool = False  # higher metric is better
    patience: int = -1  # stop after N validations without improvement; -1 = never
    checkpoint_suffix: str = ""  # appended to every checkpoint file name
    # Accepted, ignored:
    continue_once: Optional[str] = None
    checkpoint_shard_count: int = 1
    load_checkpoint_on_all_dp_ranks: bool = False
    write_checkpoints_asynchronously: bool = False
    model_parallel_size: Optional[int] = None  # None = common.model_parallel_size
    LEGACY_KEYS = ("distributed_rank",)  # keys of older fairseq versions: accepted, dropped

    def validate(self, where: str = "checkpoint") -> None:
        """Check intervals; raises W2v2Error naming the key."""
        _at_least(self.save_interval, 1, f"{where}.save_interval")
        _at_least(self.save_interval_updates, 0, f"{where}.save_interval_updates")


@dataclass
class AudioPretrainingConfig:
    """`task._name: audio_pretraining`: unlabelled audio from {split}.tsv manifests."""

    _name: str = "audio_pretraining"
    data: str = MISSING  # folder with {split}.tsv manifests (and {split}.{labels}, dict.{labels}.txt)
    labels: Optional[str] = None  # label file extension, e.g. ltr; older fairseq fine-tuned with it set here
    sample_rate: int = 16000  # every file must have this rate
    normalize: bool = False  # zero mean, unit variance per utterance
    enable_padding: bool = False  # pad to the longest item instead of cropping to the shortest
    max_sample_size: Optional[int] = None  # crop longer items to this many samples
    min_sample_size: Optional[int] = None  # skip items shorter than this
    num_batch_buckets: int = 0  # accepted; must be 0 (no length buckets beyond the sorted order)
    seed: Optional[int] = None  # None = common.seed
    # Accepted, ignored:
    multi_corpus_keys: Optional[str] = None
    multi_corpus_sampling_weights: Optional[str] = None
    binarized_dataset: bool = False
    tpu: Optional[bool] = None
    text_compression_level: str = "none"
    rebuild_batches: bool = True
    precompute_mask_config: Optional[Any] = None
    post_save_script: Optional[str] = None
    subsample: float = 1.0
    LEGACY_KEYS = ("eval_wer", "eval_wer_config", "eval_wer_tokenizer", "eval_wer_post_process", "autoregressive",
                   "precompute_mask_indices", "inferred_w2v_config")

    def validate(self, where: str = "task") -> None:
        """Check fields this toolkit relies on; raises W2v2Error naming the key."""
        _at_least(self.sample_rate, 1, f"{where}.sample_rate")
        _require(self.num_batch_buckets == 0, f"{where}.num_batch_buckets", "is not supported; it must be 0.")


@dataclass
class AudioFinetuningConfig(AudioPretrainingConfig):
    """`task._name: audio_finetuning`: audio with {split}.{labels} transcripts."""

    _name: str = "audio_finetuning"
    # Accepted, ignored (seq2seq decoding during validation):
    eval_wer: bool = False
    eval_wer_config: Optional[Any] = None
    eval_wer_tokenizer: Optional[Any] = None
    eval_wer_post_process: str = "letter"
    eval_bleu: bool = False
    eval_bleu_detok: Optional[str] = None
    eval_bleu_detok_args: Optional[str] = "{}"
    eval_tokenized_bleu: bool = False
    eval_bleu_remove_bpe: Optional[str] = None
    eval_bleu_args: Optional[str] = "{}"
    eval_bleu_print_samples: bool = False
    autoregressive: bool = False
    target_dictionary: Optional[str] = None
    LEGACY_KEYS = ()

    def validate(self, where: str = "task") -> None:
        """Also refuse seq2seq decoding; raises W2v2Error naming the key."""
        super().validate(where)
        _require(not self.eval_wer and not self.autoregressive, f"{where}.eval_wer",
                 "(with `autoregressive`, seq2seq decoding) is not supported; both must be false.")


TaskConfig = Union[AudioPretrainingConfig, AudioFinetuningConfig]


@dataclass
class DatasetConfig:
    """`dataset`: batching, loader workers and validation schedule."""

    num_workers: int = 1  # data-loading processes per training process
    skip_invalid_size_inputs_valid_test: bool = False  # drop too long/short validation items instead of failing
    max_tokens: Optional[int] = None  # samples per batch (sum over items of the longest item's length)
    batch_size: Optional[int] = None  # items per batch
    required_batch_size_multiple: int = 8  # batch sizes are rounded down to a multiple of this
    train_subset: str = "train"
    valid_subset: str = "valid"  # comma-separated list of validation splits
    validate_interval: int = 1  # validate every N epochs
    validate_interval_updates: int = 0  # also validate every N updates; 0 = never
    validate_after_updates: int = 0  # no validation before this many updates
    fixed_validation_seed: Optional[int] = None  # seed for validation; None = common.seed
    disable_validation: bool = False
    max_tokens_valid: Optional[int] = None  # None = max_tokens
    batch_size_valid: Optional[int] = None  # None = batch_size
    max_valid_steps: Optional[int] = None  # validate on at most N batches
    curriculum: int = 0  # keep the length order (no batch shuffling) for the first N epochs
    # Accepted, ignored:
    required_seq_len_multiple: int = 1
    dataset_impl: Optional[str] = None
    data_buffer_size: int = 10
    combine_valid_subsets: Optional[bool] = None
    ignore_unused_valid_subsets: bool = False
    gen_subset: str = "test"
    num_shards: int = 1
    shard_id: int = 0
    grouped_shuffling: bool = False
    update_epoch_batch_itr: bool = False
    update_ordered_indices_seed: bool = False

    def validate(self, where: str = "dataset") -> None:
        """A batch needs a size bound (fairseq asserts the same)."""
        _require(self.max_tokens is not None or self.batch_size is not None, f"{where}.max_tokens",
                 f"or `{where}.batch_size` must be set, but both are null.")
        _at_least(self.num_workers, 0, f"{where}.num_workers")


DDP_BACKENDS = ("c10d", "fully_sharded", "legacy_ddp", "no_c10d", "pytorch_ddp", "slowmo")


@dataclass
class DistributedTrainingConfig:
    """`distributed_training`: process count and DDP settings."""

    distributed_world_size: int = 1  # processes in all; fairseq's default is the visible GPU count
    distributed_num_procs: int = 1  # processes per node; fairseq's default is the visible GPU count
    distributed_rank: int = 0
    distributed_backend: str = "nccl"  # accepted; the backend comes from the device (gloo, nccl, hccl)
    distributed_init_method: Optional[str] = None  # e.g. tcp://host:port
    distributed_port: int = -1
    device_id: int = 0
    distributed_no_spawn: bool = False  # do not spawn one process per device
    ddp_backend: str = "pytorch_ddp"  # all but fully_sharded and slowmo map to torch DDP
    bucket_cap_mb: int = 25  # DDP gradient bucket size
    find_unused_parameters: bool = False
    broadcast_buffers: bool = False
    heartbeat_timeout: int = -1  # seconds before a silent rank is an error; -1 = no limit
    nprocs_per_node: int = 1  # fairseq's default is the visible GPU count
    # Accepted, ignored:
    ddp_comm_hook: str = "none"
    fix_batches_to_gpus: bool = False
    gradient_as_bucket_view: bool = False
    fast_stat_sync: bool = False
    slowmo_momentum: Optional[float] = None
    slowmo_base_algorithm: str = "localsgd"
    localsgd_frequency: int = 3
    pipeline_model_parallel: bool = False
    pipeline_balance: Optional[str] = None
    pipeline_devices: Optional[str] = None
    pipeline_chunks: Optional[int] = 0
    pipeline_encoder_balance: Optional[str] = None
    pipeline_encoder_devices: Optional[str] = None
    pipeline_decoder_balance: Optional[str] = None
    pipeline_decoder_devices: Optional[str] = None
    pipeline_checkpoint: str = "never"
    zero_sharding: str = "none"
    fp16: Optional[bool] = None  # None = common.fp16
    memory_efficient_fp16: Optional[bool] = None
    tpu: Optional[bool] = None
    no_reshard_after_forward: bool = False
    fp32_reduce_scatter: bool = False
    cpu_offload: bool = False
    use_sharded_state: bool = False
    not_fsdp_flatten_parameters: bool = False
    LEGACY_KEYS = ("local_rank", "distributed_wrapper", "slowmo_algorithm")

    def validate(self, where: str = "distributed_training") -> None:
        """Check the world size and DDP backend; raises W2v2Error naming the key."""
        _at_least(self.distributed_world_size, 1, f"{where}.distributed_world_size")
        _choice(self.ddp_backend, DDP_BACKENDS, f"{where}.ddp_backend")
        _require(self.ddp_backend not in ("fully_sharded", "slowmo"), f"{where}.ddp_backend",
                 f"{self.ddp_backend!r} is not supported; use legacy_ddp, no_c10d, c10d or pytorch_ddp.")


@dataclass
class Wav2vecCriterionConfig:
    """`criterion._name: wav2vec`: contrastive loss plus weighted extra losses."""

    _name: str = "wav2vec"
    infonce: bool = False  # cross entropy over [positive, distractors]; false = binary cross entropy
    loss_weights: Optional[List[float]] = None  # weights of the diversity and feature-penalty terms
    log_keys: List[str] = field(default_factory=list)  # model outputs to log, e.g. prob_perplexity


@dataclass
class CtcCriterionConfig:
    """`criterion._name: ctc`: CTC loss with greedy UER/WER on validation."""

    _name: str = "ctc"
    zero_infinity: bool = False  # zero the loss (and gradient) of impossible alignments
    sentence_avg: Optional[bool] = None  # normalise by utterances, not letters; None = optimization.sentence_avg
    post_process: str = "letter"  # how labels become words for WER
    # Accepted, ignored (decoding with a language model):
    wer_kenlm_model: Optional[str] = None
    wer_lexicon: Optional[str] = None
    wer_lm_weight: float = 2.0
    wer_word_score: float = -1.0
    wer_sil_weight: float = 0.0
    wer_args: Optional[str] = None

    def validate(self, where: str = "criterion") -> None:
        """Only letter labels are decoded; raises W2v2Error naming the key."""
        _choice(self.post_process, ("letter",), f"{where}.post_process")
        _require(self.wer_kenlm_model is None, f"{where}.wer_kenlm_model", "(LM decoding) is not supported.")


@dataclass
class OptimizationConfig:
    """`optimization`: stopping, gradient accumulation, clipping and the peak lr."""

    max_epoch: int = 0  # stop after this epoch; 0 = no limit
    max_update: int = 0  # stop after this many updates; 0 = no limit
    stop_time_hours: float = 0.0  # stop after this much training time; 0 = no limit
    clip_norm: float = 0.0  # clip the gradient norm to this; 0 = no clipping
    sentence_avg: bool = False  # normalise gradients by utterances instead of the criterion's sample size
    update_freq: List[int] = field(default_factory=lambda: [1])  # batches accumulated per update (per epoch i: item i)
    lr: List[float] = field(default_factory=lambda: [0.25])  # peak lr, read by the schedule
    stop_min_lr: float = -1.0  # stop when the lr falls to this
    # Accepted, ignored:
    use_bmuf: bool = False
    skip_remainder_batch: bool = False
    debug_param_names: bool = False
    LEGACY_KEYS = ("min_lr",)  # older name of stop_min_lr

    def validate(self, where: str = "optimization") -> None:
        """Check counts and lists; raises W2v2Error naming the key."""
        for name in ("max_epoch", "max_update", "clip_norm"):
            _at_least(getattr(self, name), 0, f"{where}.{name}")
        _require(len(self.update_freq) > 0 and min(self.update_freq) >= 1, f"{where}.update_freq",
                 f"must be a list of integers >= 1 such as [4], but is {self.update_freq} instead.")
        _require(len(self.lr) > 0 and min(self.lr) >= 0, f"{where}.lr",
                 f"must be a list of learning rates >= 0 such as [0.0005], but is {self.lr} instead.")


CriterionConfig = Union[Wav2vecCriterionConfig, CtcCriterionConfig]
ModelConfig = Union[Wav2Vec2Config, Wav2Vec2CtcConfig]
MODEL_CONFIGS: Dict[str, type] = {"wav2vec2": Wav2Vec2Config, "wav2vec_ctc": Wav2Vec2CtcConfig}

# Groups whose schema is fixed; in fairseq they are typed, so `key=value` may set any field.
TYPED_GROUPS: Dict[str, type] = {
    "common": CommonConfig,
    "checkpoint": CheckpointConfig,
    "dataset": DatasetConfig,
    "distributed_training": DistributedTrainingConfig,
    "optimization": OptimizationConfig,
}
# Groups whose schema `_name` picks; in fairseq they hold only the keys the YAML lists (`+key=` adds one).
NAMED_GROUPS: Dict[str, Dict[str, type]] = {
    "task": {"audio_pretraining": AudioPretrainingConfig, "audio_finetuning": AudioFinetuningConfig},
    "criterion": {"wav2vec": Wav2vecCriterionConfig, "ctc": CtcCriterionConfig},
    "optimizer": {"adam": AdamConfig},
    "lr_scheduler": dict(LR_SCHEDULER_CONFIGS),
}
# Other groups of fairseq's saved configs: kept as given, unused (typed in fairseq, untyped here).
EXTRA_GROUPS = ("common_eval", "bmuf", "generation", "eval_lm", "interactive", "ema")
EXTRA_UNTYPED_GROUPS = ("scoring", "bpe", "tokenizer")


@dataclass
class TrainConfig:
    """A whole training config: fairseq's groups, each validated against its schema."""

    task: TaskConfig
    criterion: CriterionConfig
    optimizer: AdamConfig
    lr_scheduler: LrSchedulerConfig
    model: ModelConfig  # picked by model._name
    common: CommonConfig = field(default_factory=CommonConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    extra: Dict[str, Any] = field(default_factory=dict)  # EXTRA_GROUPS / EXTRA_UNTYPED_GROUPS as given

    @property
    def is_finetuning(self) -> bool:
        """True for CTC fine-tuning (a ctc criterion), False for pretraining."""
        return isinstance(self.criterion, CtcCriterionConfig)

    def validate(self) -> None:
        """Run every group's own checks; raises W2v2Error naming the key."""
        for name in list(TYPED_GROUPS) + list(NAMED_GROUPS):
            check = getattr(getattr(self, name), "validate", None)
            if check is not None:
                check(name)
        if self.is_finetuning and not self.task.labels:
            raise W2v2Error("`task.labels` must name the label files (e.g. ltr) for the ctc criterion, but is null.")
        model_name = "wav2vec_ctc" if self.is_finetuning else "wav2vec2"
        if not isinstance(self.model, MODEL_CONFIGS[model_name]):
            raise W2v2Error(f"`model._name` must be {model_name} with the {self.criterion._name} criterion, "
                            f"but is {_model_name(self.model)} instead.")

    def to_dict(self) -> Dict[str, Any]:
        """The plain nested dict fairseq stores as a checkpoint's `cfg` (`_name` in every group)."""
        result: Dict[str, Any] = {"_name": None}
        for name in TYPED_GROUPS:
            result[name] = {"_name": None, **dataclasses.asdict(getattr(self, name))}
        for name in NAMED_GROUPS:
            result[name] = dataclasses.asdict(getattr(self, name))
        result["model"] = {"_name": _model_name(self.model), **self.model.to_dict()}
        result.update(self.extra)
        return result


def link_shared_fields(cfg: TrainConfig) -> None:
    """Fill the fields fairseq links to other groups (`${optimization.lr}` etc.) when left unset."""
    links = [
        (cfg.optimizer, "lr", cfg.optimization.lr),
        (cfg.optimizer, "tpu", cfg.common.tpu),
        (cfg.lr_scheduler, "lr", cfg.optimization.lr),
        (cfg.lr_scheduler, "total_num_update", float(cfg.optimization.max_update)),
        (cfg.lr_scheduler, "max_update", float(cfg.optimization.max_update)),
        (cfg.criterion, "sentence_avg", cfg.optimization.sentence_avg),
        (cfg.task, "seed", cfg.common.seed),
        (cfg.task, "tpu", cfg.common.tpu),
        (cfg.dataset, "max_tokens_valid", cfg.dataset.max_tokens),
        (cfg.dataset, "batch_size_valid", cfg.dataset.batch_size),
        (cfg.checkpoint, "model_parallel_size", cfg.common.model_parallel_size),
        (cfg.distributed_training, "fp16", cfg.common.fp16),
        (cfg.distributed_training, "memory_efficient_fp16", cfg.common.memory_efficient_fp16),
        (cfg.distributed_training, "tpu", cfg.common.tpu),
    ]
    for group, name, value in links:
        if hasattr(group, name) and getattr(group, name) is None:
            setattr(group, name, list(value) if isinstance(value, list) else value)


def _model_name(model: ModelConfig) -> str:
    return next(name for name, schema in MODEL_CONFIGS.items() if type(model) is schema)


def _choice(value: Any, choices: tuple, where: str) -> None:
    if value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise W2v2Error(f"`{where}` must be one of {shown}, but is {value!r} instead.")


def _at_least(value: float, minimum: float, where: str) -> None:
    _require(value >= minimum, where, f"must be >= {minimum}, but is {value} instead.")


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise W2v2Error(f"`{where}` {message}")
