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
from w2v2.models.wav2vec2 import Wav2Vec2Model
from w2v2.train.config import TrainConfig
from w2v2.train.losses import LossOutput, contrastive_loss, ctc_loss

Model = Union[Wav2Vec2Model, Wav2Vec2Ctc]
# criterion(forward, model, batch): `forward` may be the DDP wrapper of `model`.
Criterion = Callable[[torch.nn.Module, Model, Dict[str, Any]], LossOutput]
PRETRAINING_HEADS = ("quantizer.", "project_q.", "final_proj.", "target_glu.")


@dataclass
class Task:
    """The pieces a training run is made of."""

    cfg: TrainConfig
    dictionary: Optional[Dictionary]  # the letters, for fine-tuning

    @classmethod
    def setup(cls, cfg: TrainConfig) -> "Task":
        """Check the data folder and read the dictionary (fine-tuning)."""
        data = Path(cfg.task.data)
        if not data.is_dir():
            raise W2v2Error(f"`task.data` must be a folder with the {cfg.dataset.train_subset}.tsv manifest, "
                            f"but {data} is not a folder.")
        dictionary = Dictionary.load(data / f"dict.{cfg.task.labels}.txt") if cfg.is_finetuning else None
        return cls(cfg, dictionary)

    def dataset(self, split: str, training: bool) -> AudioDataset:
        """The dataset of `{task.data}/{split}.tsv` (and `{split}.{labels}` for fine-tuning)."""
        task, data = self.cfg.task, Path(self.cfg.task.data)
        manifest = data / f"{split}.tsv"
        if not manifest.is_file():
            raise W2v2Error(f"the manifest of split {split!r} does not exist: {manifest}.")
        options: Dict[str, Any] = {"sample_rate": task.sample_rate, "normalize": task.normalize,
                                   "min_sample_size": task.min_sample_size or 0}
        if self.dictionary is not None:
            return FinetuningDataset.from_manifest(manifest, data / f"{split}.{task.labels}", self.dictionary, **options)
        crop = task.max_sample_size if training or not task.enable_padding else None
        return PretrainingDataset.from_manifest(manifest, max_sample_size=crop, seed=task.seed or 1, **options)

    def build_model(self) -> Model:
        """A fresh pretraining model, or a CTC model on the pretrained weights of `model.w2v_path`."""
        if not self.cfg.is_finetuning:
            return Wav2Vec2Model(self.cfg.model)  # type: ignore[arg-type]
        return build_ctc_model(self.cfg, self.dictionary)  # type: ignore[arg-type]

    def criterion(self) -> Criterion:
        """The loss function of this config: contrastive (wav2vec) or CTC."""
        if self.cfg.is_finetuning:
            dictionary, crit = self.dictionary, self.cfg.criterion

            def ctc(forward: torch.nn.Module, model: Model, batch: Dict[str, Any]) -> LossOutput:
                net_output = forward(**batch["net_input"])
                return ctc_loss(model, net_output, batch["target"], dictionary, bool(crit.sentence_avg),  # type: ignore[arg-type]
                                crit.zero_infinity, batch["target_lengths"])

            return ctc
        weights = self.cfg.criterion.loss_weights or ()
        if not self.cfg.criterion.infonce:  # type: ignore[union-attr]
            raise W2v2Error("`criterion.infonce` must be true: wav2vec 2.0 uses the InfoNCE loss, "
                            "and the binary cross-entropy variant is not supported.")

        def contrastive(forward: torch.nn.Module, model: Model, batch: Dict[str, Any]) -> LossOutput:
            net_output = forward(**batch["net_input"])
            return contrastive_loss(model, net_output, weights, nsentences=len(batch["id"]))  # type: ignore[arg-type]

        return contrastive


def build_ctc_model(cfg: TrainConfig, dictionary: Dictionary) -> Wav2Vec2Ctc:
    """fairseq's fine-tuning start: the pretraining config from `w2v_args` or `w2v_path`, its weights
    from `w2v_path` (unless `w2v_args` is given, as when a fine-tuned config is resumed)."""
    model_cfg = cfg.model
    pretraining = pretraining_config_of(model_cfg.to_dict(), "model")  # type: ignore[union-attr]
    weights = None
    if pretraining is None:
        path = model_cfg.w2v_path  # type: ignore[union-attr]
        if not path:
            raise W2v2Error("`model.w2v_path` must name the pretrained checkpoint (e.g. wav2vec_small.pt), but is empty.")
        state = load_checkpoint_file(path)
        pretraining, weights = config_from_checkpoint(state, path), state["model"]
    pretrained = Wav2Vec2Config.from_dict(pretraining["model"], where="model.w2v_args.model")
    pretrained_normalize = bool((pretraining.get("task") or {}).get("normalize", False))
    if not model_cfg.normalize == cfg.task.normalize == pretrained_normalize:  # type: ignore[union-attr]
        raise W2v2Error(
            f"`task.normalize` ({cfg.task.normalize}) and `model.normalize` ({model_cfg.normalize}) must both equal "  # type: ignore[union-attr]
            f"the pretraining task's normalize ({pretrained_normalize}): the model was pretrained on "
            f"{'normalised' if pretrained_normalize else 'raw'} waveforms."
        )
    model = Wav2Vec2Ctc(model_cfg, pretrained, len(dictionary))  # type: ignore[arg-type]
    if weights is not None and not model_cfg.no_pretrained_weights:  # type: ignore[union-attr]
        encoder_weights = {k: v for k, v in weights.items() if not k.startswith(PRETRAINING_HEADS)}
        load_state(model.w2v_encoder.w2v_model, encoder_weights, str(model_cfg.w2v_path))  # type: ignore[union-attr]
    model.fairseq_cfg = {"model": {"w2v_args": {**pretraining, "model": {
        "_name": "wav2vec2", **model.w2v_encoder.w2v_model.cfg.to_dict()}}}}
    model.dictionary = dictionary
    return model

