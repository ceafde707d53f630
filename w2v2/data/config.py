"""The `task` group: which audio (and labels) a run reads, with fairseq's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from w2v2.schema import MISSING, Group, at_least, default_only, linked, no_effect

SEQ2SEQ = "seq2seq decoding is not implemented"


@dataclass
class AudioPretrainingConfig(Group):
    """`task._name: audio_pretraining`: unlabelled audio from {split}.tsv manifests."""

    _name: str = "audio_pretraining"
    data: str = MISSING  # folder with {split}.tsv manifests (and {split}.{labels}, dict.{labels}.txt)
    labels: Optional[str] = None  # label file extension, e.g. ltr; older fairseq fine-tuned with it set here
    multi_corpus_keys: Optional[str] = default_only(None, "multi-corpus training is not implemented")
    multi_corpus_sampling_weights: Optional[str] = default_only(None, "multi-corpus training is not implemented")
    binarized_dataset: bool = default_only(False, "binarized label files are not implemented")
    sample_rate: int = 16000  # every file must have this rate
    normalize: bool = False  # zero mean, unit variance per utterance
    enable_padding: bool = False  # pad to the longest item instead of cropping to the shortest
    max_sample_size: Optional[int] = None  # crop longer items to this many samples
    min_sample_size: Optional[int] = None  # skip items shorter than this
    num_batch_buckets: int = 0  # pad batches to this many length quantiles (0: to the longest; NPU: 16)
    tpu: Optional[bool] = no_effect(None, link="common.tpu")
    text_compression_level: str = no_effect("none")  # how fairseq keeps labels in memory
    rebuild_batches: bool = no_effect(True)  # batches are rebuilt every epoch here anyway
    precompute_mask_config: Optional[Any] = default_only(None, "precomputed masks are not implemented")
    post_save_script: Optional[str] = default_only(None, "running a script after each save is not implemented")
    subsample: float = default_only(1.0, "subsampling the training set is not implemented")
    seed: Optional[int] = linked("common.seed")

    LEGACY = {"eval_wer": None, "eval_wer_config": None, "eval_wer_tokenizer": None, "eval_wer_post_process": None,
              "autoregressive": None, "precompute_mask_indices": None, "inferred_w2v_config": None}

    def check(self, where: str) -> None:
        at_least(self.sample_rate, 1, f"{where}.sample_rate")
        at_least(self.num_batch_buckets, 0, f"{where}.num_batch_buckets")
        if self.max_sample_size is not None:
            at_least(self.max_sample_size, 1, f"{where}.max_sample_size")
        if self.min_sample_size is not None:
            at_least(self.min_sample_size, 0, f"{where}.min_sample_size")


@dataclass
class AudioFinetuningConfig(AudioPretrainingConfig):
    """`task._name: audio_finetuning`: audio with {split}.{labels} transcripts."""

    _name: str = "audio_finetuning"
    eval_wer: bool = default_only(False, SEQ2SEQ)
    eval_wer_config: Optional[Any] = no_effect(None)
    eval_wer_tokenizer: Optional[Any] = no_effect(None)
    eval_wer_post_process: str = no_effect("letter")
    eval_bleu: bool = default_only(False, SEQ2SEQ)
    eval_bleu_detok: Optional[str] = no_effect(None)
    eval_bleu_detok_args: Optional[str] = no_effect("{}")
    eval_tokenized_bleu: bool = no_effect(False)
    eval_bleu_remove_bpe: Optional[str] = no_effect(None)
    eval_bleu_args: Optional[str] = no_effect("{}")
    eval_bleu_print_samples: bool = no_effect(False)
    autoregressive: bool = default_only(False, SEQ2SEQ)
    target_dictionary: Optional[str] = no_effect(None)

    LEGACY = {}  # eval_* are fields here


TASK_CONFIGS = {"audio_pretraining": AudioPretrainingConfig, "audio_finetuning": AudioFinetuningConfig}
