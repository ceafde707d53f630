"""Typed schemas of fairseq's training config groups, with fairseq's field names and defaults.

Every field fairseq 0.12 writes into a checkpoint's `cfg` for these groups is here, so fairseq's
YAML files and saved configs validate unchanged. What each field does here is declared with it
(see `w2v2.schema`): plain fields act as in fairseq, `no_effect` ones are reported when set,
`default_only` ones are refused unless left at their default. The run kind is a type:
`PretrainingConfig` or `FinetuningConfig`, chosen by `model._name`.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from w2v2.data.config import TASK_CONFIGS, AudioPretrainingConfig
from w2v2.errors import W2v2Error
from w2v2.models.config import MODEL_CONFIGS, Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.schema import Group, Schema, at_least, default_only, linked, no_effect, one_of, require
from w2v2.train.lr_schedules import LR_SCHEDULER_CONFIGS, LrSchedulerConfig
from w2v2.train.optim import AdamConfig

NOT_PARALLEL = "model and pipeline parallelism are not implemented"


@dataclass
class CommonConfig(Group):
    """`common`: logging, seed, device and precision."""

    no_progress_bar: bool = False  # log lines instead of a tqdm bar
    log_interval: int = 100  # updates between training log lines
    log_format: Optional[str] = None  # json, none, simple or tqdm; None = tqdm on a terminal, else simple
    log_file: Optional[str] = None  # also write the log to this file
    aim_repo: Optional[str] = no_effect(None)
    aim_run_hash: Optional[str] = no_effect(None)
    tensorboard_logdir: Optional[str] = None  # write TensorBoard events here
    wandb_project: Optional[str] = no_effect(None)
    azureml_logging: bool = no_effect(False)
    seed: int = 1  # seeds Python, NumPy and torch
    cpu: bool = False  # train on the CPU even when an accelerator is present
    tpu: bool = no_effect(False)
    bf16: bool = False  # bfloat16 autocast
    memory_efficient_bf16: bool = no_effect(False)
    fp16: bool = False  # float16 autocast with dynamic loss scaling
    memory_efficient_fp16: bool = no_effect(False)
    fp16_no_flatten_grads: bool = no_effect(False)
    fp16_init_scale: int = 128  # first loss scale
    # overflow-free updates before the loss scale doubles; None = 2**14 / world size / update_freq
    fp16_scale_window: Optional[int] = None
    fp16_scale_tolerance: float = 0.0  # share of overflowing updates since the last rescale tolerated before halving
    on_cpu_convert_precision: bool = no_effect(False)
    min_loss_scale: float = 1e-4  # stop training when the scale would fall below this
    threshold_loss_scale: Optional[float] = None  # the scale never falls below this
    amp: bool = False  # torch.amp float16 autocast with a grad scaler: what fp16 does here
    amp_batch_retries: int = no_effect(2)  # fairseq retries an overflowing amp batch; here it is skipped as in fp16
    amp_init_scale: int = 128  # first loss scale with amp
    amp_scale_window: Optional[int] = None  # fp16_scale_window with amp
    user_dir: Optional[str] = default_only(None, "fairseq plug-in modules cannot be loaded")
    empty_cache_freq: int = 0  # free the accelerator's cached memory every N updates; 0 = never
    all_gather_list_size: int = no_effect(16384)
    model_parallel_size: int = no_effect(1)
    quantization_config_path: Optional[str] = default_only(None, "quantization-aware training is not implemented")
    profile: bool = no_effect(False)
    reset_logging: bool = no_effect(False)
    suppress_crashes: bool = no_effect(False)
    use_plasma_view: bool = no_effect(False)
    plasma_path: Optional[str] = no_effect("/tmp/plasma")
    # Ours, not fairseq's (fairseq's loader does not read `common` from a checkpoint); see docs/SPEED.md.
    compile: bool = False  # torch.compile the training forward (the first steps of each shape compile)
    compile_dynamic: Optional[bool] = None  # torch.compile's `dynamic`; false: one graph per batch shape
    feature_cache: bool = False  # fine-tuning with a frozen CNN: each utterance's CNN output computed once

    def check(self, where: str) -> None:
        one_of(self.log_format, (None, "json", "none", "simple", "tqdm"), f"{where}.log_format")
        at_least(self.log_interval, 1, f"{where}.log_interval")
        require(0 <= self.fp16_scale_tolerance <= 1, f"{where}.fp16_scale_tolerance",
                f"must be a share between 0 and 1, but is {self.fp16_scale_tolerance} instead.")


@dataclass
class CheckpointConfig(Group):
    """`checkpoint`: where, when and what to save, and what to restore."""

    LEGACY = {"distributed_rank": None}

    save_dir: str = "checkpoints"  # relative to the run directory
    restore_file: str = "checkpoint_last.pt"  # resume from this file (in save_dir unless a path) if it exists
    continue_once: Optional[str] = default_only(None, "continuing once from another run is not implemented")
    finetune_from_model: Optional[str] = None  # load only the weights of this file, then start afresh
    reset_dataloader: bool = False  # on restore, start the epoch over
    reset_lr_scheduler: bool = False  # on restore, drop the schedule state
    reset_meters: bool = False  # on restore, drop the logged history (end-of-epoch records)
    reset_optimizer: bool = False  # on restore, drop the optimizer state and the update count
    optimizer_overrides: str = "{}"  # dict literal of optimizer fields (e.g. {'lr': 1e-5}) set after a restore
    save_interval: int = 1  # save every N epochs
    save_interval_updates: int = 0  # also save every N updates; 0 = never
    keep_interval_updates: int = -1  # keep the last N update checkpoints; -1 = all
    keep_interval_updates_pattern: int = -1  # never delete update checkpoints at multiples of this
    keep_last_epochs: int = -1  # keep the last N epoch checkpoints; -1 = all
    keep_best_checkpoints: int = -1  # also keep the N best as checkpoint.best_{metric}_{value}.pt; -1 = none
    no_save: bool = False  # save nothing
    no_epoch_checkpoints: bool = False  # no checkpoint_{epoch}.pt files
    no_last_checkpoints: bool = False  # no checkpoint_last.pt
    no_save_optimizer_state: bool = False  # leave the optimizer state out of checkpoints
    best_checkpoint_metric: str = "loss"  # validation metric that picks checkpoint_best.pt
    maximize_best_checkpoint_metric: bool = False  # higher metric is better
    patience: int = -1  # stop after N validations without improvement; -1 = never
    checkpoint_suffix: str = ""  # appended to every checkpoint file name
    checkpoint_shard_count: int = no_effect(1)
    load_checkpoint_on_all_dp_ranks: bool = no_effect(False)
    write_checkpoints_asynchronously: bool = no_effect(False)
    model_parallel_size: Optional[int] = no_effect(None, link="common.model_parallel_size")

    def check(self, where: str) -> None:
        at_least(self.save_interval, 1, f"{where}.save_interval")
        at_least(self.save_interval_updates, 0, f"{where}.save_interval_updates")
        self.overrides(where)

    def overrides(self, where: str = "checkpoint") -> Dict[str, Any]:
        """`optimizer_overrides` as a dict."""
        try:
            value = ast.literal_eval(self.optimizer_overrides)
        except (SyntaxError, ValueError):
            value = None
        require(isinstance(value, dict), f"{where}.optimizer_overrides",
                f"must be a Python dict literal such as \"{{'lr': 1e-5}}\", but is {self.optimizer_overrides!r} instead.")
        return value


@dataclass
class DatasetConfig(Group):
    """`dataset`: batching, loader workers and validation schedule."""

    num_workers: int = 1  # data-loading processes per training process
    skip_invalid_size_inputs_valid_test: bool = False  # drop validation items too long for a batch instead of failing
    max_tokens: Optional[int] = None  # samples per batch (sum over items of the longest item's length)
    batch_size: Optional[int] = None  # items per batch
    required_batch_size_multiple: int = 8  # batches of this many items or more are cut to a multiple of it
    required_seq_len_multiple: int = no_effect(1)  # fairseq's audio datasets ignore it too
    dataset_impl: Optional[str] = no_effect(None)
    data_buffer_size: int = no_effect(10)
    train_subset: str = "train"
    valid_subset: str = "valid"  # comma-separated list of validation splits
    combine_valid_subsets: Optional[bool] = default_only(None, "validation subsets are always kept apart")
    ignore_unused_valid_subsets: bool = no_effect(False)
    validate_interval: int = 1  # validate every N epochs
    validate_interval_updates: int = 0  # also validate every N updates; 0 = never
    validate_after_updates: int = 0  # no validation before this many updates
    fixed_validation_seed: Optional[int] = None  # seed for validation; None = common.seed
    disable_validation: bool = False
    max_tokens_valid: Optional[int] = linked("dataset.max_tokens")
    batch_size_valid: Optional[int] = linked("dataset.batch_size")
    max_valid_steps: Optional[int] = None  # validate on at most N batches
    curriculum: int = 0  # keep the length order (no batch shuffling) for the first N epochs
    gen_subset: str = no_effect("test")  # used by fairseq's generation tools, not training
    num_shards: int = default_only(1, "sharding a dataset across jobs is not implemented")
    shard_id: int = default_only(0, "sharding a dataset across jobs is not implemented")
    grouped_shuffling: bool = default_only(False, "grouped shuffling is not implemented")
    update_epoch_batch_itr: Optional[bool] = no_effect(None, link="dataset.grouped_shuffling")
    update_ordered_indices_seed: bool = no_effect(False)

    def check(self, where: str) -> None:
        require(self.max_tokens is not None or self.batch_size is not None, f"{where}.max_tokens",
                f"or `{where}.batch_size` must be set, but both are null.")
        at_least(self.num_workers, 0, f"{where}.num_workers")
        at_least(self.required_batch_size_multiple, 1, f"{where}.required_batch_size_multiple")
        at_least(self.curriculum, 0, f"{where}.curriculum")


DDP_BACKENDS = ("c10d", "fully_sharded", "legacy_ddp", "no_c10d", "pytorch_ddp", "slowmo")
TORCHRUN = "torchrun's environment decides"


@dataclass
class DistributedTrainingConfig(Group):
    """`distributed_training`: process count and DDP settings."""

    LEGACY = {"local_rank": None, "distributed_wrapper": None, "slowmo_algorithm": None}

    distributed_world_size: int = 1  # processes in all; fairseq's default is the visible GPU count
    distributed_num_procs: int = no_effect(1)  # torchrun's environment decides
    distributed_rank: int = no_effect(0)
    distributed_backend: str = no_effect("nccl")  # the backend comes from the device (gloo, nccl, hccl)
    distributed_init_method: Optional[str] = no_effect(None)
    distributed_port: int = no_effect(-1)
    device_id: int = no_effect(0)  # the device is the local rank's
    distributed_no_spawn: bool = no_effect(False)
    ddp_backend: str = no_effect("pytorch_ddp")  # every accepted value is torch DDP here; fully_sharded/slowmo refused
    ddp_comm_hook: str = no_effect("none")
    bucket_cap_mb: int = 25  # DDP gradient bucket size
    fix_batches_to_gpus: bool = no_effect(False)
    find_unused_parameters: bool = False
    gradient_as_bucket_view: bool = no_effect(False)
    fast_stat_sync: bool = no_effect(False)
    heartbeat_timeout: int = -1  # seconds before a silent rank is an error; -1 = no limit
    broadcast_buffers: bool = False
    slowmo_momentum: Optional[float] = no_effect(None)
    slowmo_base_algorithm: str = no_effect("localsgd")
    localsgd_frequency: int = no_effect(3)
    nprocs_per_node: int = no_effect(1)
    pipeline_model_parallel: bool = default_only(False, NOT_PARALLEL)
    pipeline_balance: Optional[str] = no_effect(None)
    pipeline_devices: Optional[str] = no_effect(None)
    pipeline_chunks: Optional[int] = no_effect(0)
    pipeline_encoder_balance: Optional[str] = no_effect(None)
    pipeline_encoder_devices: Optional[str] = no_effect(None)
    pipeline_decoder_balance: Optional[str] = no_effect(None)
    pipeline_decoder_devices: Optional[str] = no_effect(None)
    pipeline_checkpoint: str = no_effect("never")
    zero_sharding: str = no_effect("none")
    fp16: Optional[bool] = no_effect(None, link="common.fp16")
    memory_efficient_fp16: Optional[bool] = no_effect(None, link="common.memory_efficient_fp16")
    tpu: Optional[bool] = no_effect(None, link="common.tpu")
    no_reshard_after_forward: bool = no_effect(False)
    fp32_reduce_scatter: bool = no_effect(False)
    cpu_offload: bool = no_effect(False)
    use_sharded_state: bool = no_effect(False)
    not_fsdp_flatten_parameters: bool = no_effect(False)

    def check(self, where: str) -> None:
        at_least(self.distributed_world_size, 1, f"{where}.distributed_world_size")
        one_of(self.ddp_backend, DDP_BACKENDS, f"{where}.ddp_backend")
        require(self.ddp_backend not in ("fully_sharded", "slowmo"), f"{where}.ddp_backend",
                f"{self.ddp_backend!r} is not supported; use legacy_ddp, no_c10d, c10d or pytorch_ddp.")


@dataclass
class Wav2vecCriterionConfig(Group):
    """`criterion._name: wav2vec`: contrastive loss plus weighted extra losses."""

    _name: str = "wav2vec"
    infonce: bool = False  # cross entropy over [positive, distractors]; must be true here
    loss_weights: Optional[List[float]] = None  # weights of the diversity and feature-penalty terms
    log_keys: List[str] = field(default_factory=list)  # model outputs to log, e.g. prob_perplexity

    def check(self, where: str) -> None:
        require(self.infonce, f"{where}.infonce", "must be true: wav2vec 2.0 uses the InfoNCE loss, and the "
                "binary cross-entropy variant is not supported.")
        for key in self.log_keys:
            one_of(key, LOGGABLE_OUTPUTS, f"{where}.log_keys")


LOGGABLE_OUTPUTS = ("prob_perplexity", "code_perplexity", "temp")  # what our pretraining model outputs


@dataclass
class CtcCriterionConfig(Group):
    """`criterion._name: ctc`: CTC loss with greedy UER/WER on validation."""

    _name: str = "ctc"
    zero_infinity: bool = False  # zero the loss (and gradient) of impossible alignments
    sentence_avg: Optional[bool] = linked("optimization.sentence_avg")  # normalise by utterances, not letters
    post_process: str = "letter"  # how labels become words for WER
    wer_kenlm_model: Optional[str] = default_only(None, "LM decoding during validation is not implemented; "
                                                  "use `w2v2 evaluate --lm`")
    wer_lexicon: Optional[str] = no_effect(None)
    wer_lm_weight: float = no_effect(2.0)
    wer_word_score: float = no_effect(-1.0)
    wer_sil_weight: float = no_effect(0.0)
    wer_args: Optional[str] = no_effect(None)

    def check(self, where: str) -> None:
        one_of(self.post_process, ("letter",), f"{where}.post_process")


@dataclass
class OptimizationConfig(Group):
    """`optimization`: stopping, gradient accumulation, clipping and the peak lr."""

    LEGACY = {"min_lr": "stop_min_lr"}

    max_epoch: int = 0  # stop after this epoch; 0 = no limit
    max_update: int = 0  # stop after this many updates; 0 = no limit
    stop_time_hours: float = 0.0  # stop after this much training time; 0 = no limit
    clip_norm: float = 0.0  # clip the gradient norm to this; 0 = no clipping
    sentence_avg: bool = False  # normalise gradients by utterances instead of the criterion's sample size
    update_freq: List[int] = field(default_factory=lambda: [1])  # batches accumulated per update (per epoch i: item i)
    lr: List[float] = field(default_factory=lambda: [0.25])  # peak lr, read by the schedule
    stop_min_lr: float = -1.0  # stop when the lr falls to this
    use_bmuf: bool = default_only(False, "BMUF is not implemented")
    skip_remainder_batch: bool = False  # drop an epoch's last update when it has fewer than update_freq batches
    debug_param_names: bool = no_effect(False)

    def check(self, where: str) -> None:
        for name in ("max_epoch", "max_update", "clip_norm"):
            at_least(getattr(self, name), 0, f"{where}.{name}")
        require(len(self.update_freq) > 0 and min(self.update_freq) >= 1, f"{where}.update_freq",
                f"must be a list of integers >= 1 such as [4], but is {self.update_freq} instead.")
        require(len(self.lr) > 0 and min(self.lr) >= 0, f"{where}.lr",
                f"must be a list of learning rates >= 0 such as [0.0005], but is {self.lr} instead.")


# Every group fairseq-hydra-train reads: one schema, or the schemas `_name` picks from.
REGISTRY: Dict[str, Schema] = {
    "common": CommonConfig,
    "checkpoint": CheckpointConfig,
    "dataset": DatasetConfig,
    "distributed_training": DistributedTrainingConfig,
    "optimization": OptimizationConfig,
    "task": TASK_CONFIGS,
    "criterion": {"wav2vec": Wav2vecCriterionConfig, "ctc": CtcCriterionConfig},
    "optimizer": {"adam": AdamConfig},
    "lr_scheduler": dict(LR_SCHEDULER_CONFIGS),
    "model": MODEL_CONFIGS,
}
# Other groups of fairseq's saved configs: kept as given, unused.
EXTRA_GROUPS = ("common_eval", "bmuf", "generation", "eval_lm", "interactive", "ema", "scoring", "bpe", "tokenizer")


@dataclass(kw_only=True)
class TrainConfig:
    """A whole training config: fairseq's groups, each validated against its schema."""

    task: AudioPretrainingConfig
    optimizer: AdamConfig
    lr_scheduler: LrSchedulerConfig
    common: CommonConfig = field(default_factory=CommonConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    extra: Dict[str, Any] = field(default_factory=dict)  # EXTRA_GROUPS as given

    def groups(self) -> Dict[str, Group]:
        """Every group by name."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "extra"}

    def check(self) -> None:
        """Checks across groups; raises W2v2Error naming the key."""

    def to_dict(self) -> Dict[str, Any]:
        """The plain nested dict fairseq stores as a checkpoint's `cfg` (`_name` in every group)."""
        result: Dict[str, Any] = {"_name": None}
        for name, group in self.groups().items():
            result[name] = {"_name": None, **group.to_dict()}
        result.update(self.extra)
        return result


@dataclass(kw_only=True)
class PretrainingConfig(TrainConfig):
    """Self-supervised pretraining: the wav2vec2 model with the contrastive criterion."""

    criterion: Wav2vecCriterionConfig
    model: Wav2Vec2Config


@dataclass(kw_only=True)
class FinetuningConfig(TrainConfig):
    """CTC fine-tuning: the wav2vec_ctc model on labelled audio."""

    criterion: CtcCriterionConfig
    model: Wav2Vec2CtcConfig

    def check(self) -> None:
        require(bool(self.task.labels), "task.labels", "must name the label files (e.g. ltr) for the ctc criterion, "
                "but is null.")
        # fairseq crops fine-tuning audio longer than this to a random window but keeps the whole transcript.
        require(self.task.max_sample_size is None, "task.max_sample_size", f"must be null when fine-tuning, but is "
                f"{self.task.max_sample_size}: fairseq would crop longer utterances to a random "
                f"{self.task.max_sample_size}-sample window and still train on their whole transcripts. Limit the "
                "batch with dataset.max_tokens instead (utterances longer than it are left out).")


KINDS = {"wav2vec2": PretrainingConfig, "wav2vec_ctc": FinetuningConfig}


def assemble(groups: Mapping[str, Group], extra: Mapping[str, Any]) -> Union[PretrainingConfig, FinetuningConfig]:
    """The config of the kind the model group names, after checking that the criterion fits it."""
    for name in ("task", "criterion", "optimizer", "lr_scheduler", "model"):
        if name not in groups:
            raise W2v2Error(f"the `{name}` group is missing from the config; it needs at least `{name}._name`.")
    model_name = next(name for name, schema in MODEL_CONFIGS.items() if type(groups["model"]) is schema)
    kind = KINDS[model_name]
    criterion = groups["criterion"]
    if not isinstance(criterion, typing.get_type_hints(kind)["criterion"]):
        fits = next(name for name, k in KINDS.items() if isinstance(criterion, typing.get_type_hints(k)["criterion"]))
        criterion_name = criterion.to_dict()["_name"]
        raise W2v2Error(f"`model._name` must be {fits} with the {criterion_name} criterion, but is {model_name} instead.")
    cfg = kind(**groups, extra=dict(extra))
    cfg.check()
    return cfg
