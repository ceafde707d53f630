"""The fine-tuning model: a pretrained wav2vec 2.0 encoder plus a linear projection to letters, for CTC."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch
from torch import nn

from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.dropout import Dropout
from w2v2.models.wav2vec2 import Wav2Vec2Model

if TYPE_CHECKING:  # the models do not depend on the data package at run time
    from w2v2.data.dictionary import Dictionary


class Wav2VecEncoder(nn.Module):
    """fairseq's `Wav2VecEncoder`: `w2v_model` (pretraining heads removed), `final_dropout`, `proj`."""

    def __init__(self, cfg: Wav2Vec2CtcConfig, pretrained: Wav2Vec2Config, output_size: int) -> None:
        super().__init__()
        self.apply_mask = cfg.apply_mask
        self.w2v_model = Wav2Vec2Model(cfg.override(pretrained))
        self.w2v_model.remove_pretraining_modules()
        self.final_dropout = Dropout(cfg.final_dropout)
        self.freeze_finetune_updates = cfg.freeze_finetune_updates
        self.num_updates = 0
        self.proj = nn.Linear(pretrained.encoder_embed_dim, output_size)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = num_updates

    @property
    def frozen(self) -> bool:
        """True while the pretrained part trains without gradients."""
        return self.num_updates < self.freeze_finetune_updates

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                cnn_features: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        grad = torch.no_grad() if self.frozen else contextlib.nullcontext()
        with grad:
            res = self.w2v_model.extract_features(source, padding_mask, mask=self.apply_mask and self.training,
                                                  cnn_features=cnn_features)
        x = self.final_dropout(res["x"].transpose(0, 1))  # (B, T, C) -> (T, B, C)
        return {"encoder_out": self.proj(x), "padding_mask": res["padding_mask"], "layer_results": res["layer_results"]}


class Wav2Vec2Ctc(nn.Module):
    """fairseq's `Wav2VecCtc`: frame logits over the letter dictionary, blank = index 0."""

    def __init__(self, cfg: Wav2Vec2CtcConfig, pretrained: Wav2Vec2Config, output_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained_cfg = pretrained
        self.fairseq_cfg: Dict[str, Any] = {}  # the config groups of the file it was loaded from, if any
        self.dictionary: Optional[Dictionary] = None  # the output letters, when known
        self.blank_weight = cfg.blank_weight
        self.w2v_encoder = Wav2VecEncoder(cfg, pretrained, output_size)

    def set_num_updates(self, num_updates: int) -> None:
        """Drive `freeze_finetune_updates` from the update count."""
        self.w2v_encoder.set_num_updates(num_updates)

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                cnn_features: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """`encoder_out` (T, B, V) raw logits and the frame `padding_mask` (B, T) or None; `cnn_features`:
        the frozen CNN's output (B, C, T), if computed elsewhere (a `FeatureCache`)."""
        return self.w2v_encoder(source, padding_mask, cnn_features)

    def get_logits(self, net_output: Dict[str, Any]) -> torch.Tensor:
        """Logits with padded frames forced to blank (0 for blank, -inf elsewhere)."""
        logits = net_output["encoder_out"]
        if self.blank_weight != 0:
            logits = logits.clone()
            logits[..., 0] += self.blank_weight
        padding = net_output["padding_mask"]
        if padding is not None and padding.any():
            forced = torch.full((logits.size(-1),), float("-inf"), dtype=logits.dtype, device=logits.device)
            forced[0] = 0.0
            logits = torch.where(padding.T.unsqueeze(-1), forced, logits)
        return logits

    def get_normalized_probs(self, net_output: Dict[str, Any], log_probs: bool = True) -> torch.Tensor:
        """(Log-)probabilities in fp32, (T, B, V)."""
        logits = self.get_logits(net_output).float()
        return torch.log_softmax(logits, dim=-1) if log_probs else torch.softmax(logits, dim=-1)

    def extract_features(
        self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, layer: Optional[int] = None
    ) -> Dict[str, Any]:
        """Encoder features (B, T, C) of the fine-tuned network, for downstream use."""
        return self.w2v_encoder.w2v_model.extract_features(source, padding_mask, mask=False, layer=layer)
