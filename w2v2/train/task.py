"""What a training config asks for, built: datasets of each split, the model and its criterion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from w2v2.data.datasets import AudioDataset, FinetuningDataset, PretrainingDataset
from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.interop.checkpoints import load_state
from w2v2.interop.fairseq_config import config_from_checkpoint, pretraining_config_of
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.models.config import Wav2Vec2Config
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.feature_cache import FeatureCache
from w2v2.models.wav2vec2 import Wav2Vec2Model
from w2v2.train.config import FinetuningConfig, PretrainingConfig, TrainConfig
from w2v2.train.losses import LossOutput, contrastive_loss, ctc_loss

Model = Union[Wav2Vec2Model, Wav2Vec2Ctc]
# criterion(forward, model, batch): `forward` may be the DDP wrapper of `model`.
Criterion = Callable[[torch.nn.Module, Any, Dict[str, Any]], LossOutput]
PRETRAINING_HEADS = ("quantizer.", "project_q.", "final_proj.", "target_glu.")


def _data_folder(cfg: TrainConfig) -> Path:
    data = Path(cfg.task.data)
    if not data.is_dir():
        raise W2v2Error(f"`task.data` must be a folder with the {cfg.dataset.train_subset}.tsv manifest, "
                        f"but {data} is not a folder.")
    return data


def _manifest(cfg: TrainConfig, split: str) -> Path:
    manifest = Path(cfg.task.data) / f"{split}.tsv"
    if not manifest.is_file():
        raise W2v2Error(f"the manifest of split {split!r} does not exist: {manifest}.")
    return manifest


def _audio_options(cfg: TrainConfig) -> Dict[str, Any]:
    task = cfg.task
    return {"sample_rate": task.sample_rate, "normalize": task.normalize, "min_sample_size": task.min_sample_size or 0}


@dataclass
class PretrainingTask:
    """Unlabelled audio, the wav2vec2 model and the contrastive loss."""

    cfg: PretrainingConfig
    dictionary: None = None
    feature_cache: None = None  # pretraining trains the CNN (see `setup_task`)

    def dataset(self, split: str, training: bool) -> AudioDataset:
        """The dataset of `{task.data}/{split}.tsv`, cropped (or padded) as fairseq does it."""
        task = self.cfg.task
        return PretrainingDataset.from_manifest(_manifest(self.cfg, split), max_sample_size=task.max_sample_size,
                                                seed=task.seed or 1, pad=task.enable_padding, **_audio_options(self.cfg))

    def build_model(self) -> Wav2Vec2Model:
        """A freshly initialised pretraining model."""
        return Wav2Vec2Model(self.cfg.model)

    def criterion(self) -> Criterion:
        """The contrastive loss with the config's extra-loss weights and logged outputs."""
        weights, log_keys = self.cfg.criterion.loss_weights or (), tuple(self.cfg.criterion.log_keys)

        def contrastive(forward: torch.nn.Module, model: Wav2Vec2Model, batch: Dict[str, Any]) -> LossOutput:
            net_output = forward(**batch["net_input"])
            return contrastive_loss(model, net_output, weights, nsentences=len(batch["id"]), log_keys=log_keys)

        return contrastive


@dataclass
class FinetuningTask:
    """Audio with letter transcripts, the CTC model on a pretrained encoder, and the CTC loss."""

    cfg: FinetuningConfig
    dictionary: Dictionary
    feature_cache: Optional[FeatureCache] = None  # made from `common.feature_cache`

    def __post_init__(self) -> None:
        if self.cfg.common.feature_cache:
            self.feature_cache = FeatureCache()

    def dataset(self, split: str, training: bool) -> AudioDataset:
        """The dataset of `{task.data}/{split}.tsv` with its `{split}.{labels}` transcripts."""
        labels = Path(self.cfg.task.data) / f"{split}.{self.cfg.task.labels}"
        return FinetuningDataset.from_manifest(_manifest(self.cfg, split), labels, self.dictionary,
                                               **_audio_options(self.cfg))

    def build_model(self) -> Wav2Vec2Ctc:
        """A CTC model on the pretrained weights of `model.w2v_path` (see `build_ctc_model`)."""
        model = build_ctc_model(self.cfg, self.dictionary)
        trained = model.w2v_encoder.w2v_model.cfg.feature_grad_mult
        if self.cfg.common.feature_cache and trained != 0:
            raise W2v2Error(f"`common.feature_cache` keeps the CNN's outputs, so it needs a frozen CNN, but "
                            f"`model.feature_grad_mult` is {trained}; set it to 0 or turn the cache off.")
        return model

    def criterion(self) -> Criterion:
        """The CTC loss, normalised per utterance or per letter as the config says; with
        `common.feature_cache`, the frozen CNN's outputs come from a `FeatureCache`."""
        dictionary, crit, cache = self.dictionary, self.cfg.criterion, self.feature_cache

        def ctc(forward: torch.nn.Module, model: Wav2Vec2Ctc, batch: Dict[str, Any]) -> LossOutput:
            net_input = batch["net_input"]
            if cache is not None:
                extractor = model.w2v_encoder.w2v_model.feature_extractor
                net_input = {**net_input, "cnn_features": cache.features(
                    extractor, net_input["source"], net_input.get("padding_mask"))}
            net_output = forward(**net_input)
            return ctc_loss(model, net_output, batch["target"], dictionary, bool(crit.sentence_avg),
                            crit.zero_infinity, batch["target_lengths"])

        return ctc


Task = Union[PretrainingTask, FinetuningTask]


def setup_task(cfg: TrainConfig) -> Task:
    """The task of `cfg`'s kind, after checking the data folder (and reading the letter dictionary)."""
    data = _data_folder(cfg)
    if isinstance(cfg, FinetuningConfig):
        return FinetuningTask(cfg, Dictionary.load(data / f"dict.{cfg.task.labels}.txt"))
    if isinstance(cfg, PretrainingConfig):
        if cfg.common.feature_cache:
            raise W2v2Error("`common.feature_cache` is for fine-tuning with a frozen CNN; pretraining trains the "
                            "CNN, so its outputs cannot be kept. Turn it off.")
        return PretrainingTask(cfg)
    raise TypeError(f"no task for {type(cfg).__name__}")


def build_ctc_model(cfg: FinetuningConfig, dictionary: Dictionary) -> Wav2Vec2Ctc:
    """fairseq's fine-tuning start: the pretraining config from `w2v_args` or `w2v_path`, its weights
    from `w2v_path` (unless `w2v_args` is given, as when a fine-tuned config is resumed). Like fairseq,
    it stores the pretraining config in `cfg.model.w2v_args`, so checkpoints rebuild without w2v_path."""
    model_cfg = cfg.model
    pretraining = pretraining_config_of(model_cfg.to_dict(), "model")
    weights: Optional[Dict[str, torch.Tensor]] = None
    if pretraining is None:
        path = model_cfg.w2v_path
        if not path:
            raise W2v2Error("`model.w2v_path` must name the pretrained checkpoint (e.g. wav2vec_small.pt), but is empty.")
        state = load_checkpoint_file(path)
        pretraining, weights = config_from_checkpoint(state, path), state["model"]
    pretrained = Wav2Vec2Config.from_dict(pretraining["model"], "model.w2v_args.model")
    pretrained_normalize = bool((pretraining.get("task") or {}).get("normalize", False))
    if not model_cfg.normalize == cfg.task.normalize == pretrained_normalize:
        raise W2v2Error(
            f"`task.normalize` ({cfg.task.normalize}) and `model.normalize` ({model_cfg.normalize}) must both equal "
            f"the pretraining task's normalize ({pretrained_normalize}): the model was pretrained on "
            f"{'normalised' if pretrained_normalize else 'raw'} waveforms."
        )
    model = Wav2Vec2Ctc(model_cfg, pretrained, len(dictionary))
    if weights is not None and not model_cfg.no_pretrained_weights:
        encoder_weights = {k: v for k, v in weights.items() if not k.startswith(PRETRAINING_HEADS)}
        load_state(model.w2v_encoder.w2v_model, encoder_weights, str(model_cfg.w2v_path))
    model_cfg.w2v_args = {**pretraining, "criterion": None, "lr_scheduler": None,
                          "model": model.w2v_encoder.w2v_model.cfg.to_dict()}
    model.dictionary = dictionary
    return model
