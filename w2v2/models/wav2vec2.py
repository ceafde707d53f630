"""The wav2vec 2.0 pretraining model: feature encoder, masking, context network, quantized targets."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from w2v2.models.config import Wav2Vec2Config
from w2v2.models.dropout import Dropout
from w2v2.models.feature_encoder import ConvFeatureExtractionModel, GradMultiply
from w2v2.models.masking import compute_mask_indices
from w2v2.models.negatives import sample_negatives
from w2v2.models.quantizer import GumbelVectorQuantizer
from w2v2.models.transformer import TransformerEncoder


def _unit(t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """t over its norm on the last axis, the norm clamped to eps as torch.cosine_similarity does (the clamp
    outside autograd, as there)."""
    norm = torch.linalg.vector_norm(t, 2, dim=-1, keepdim=True).clone()
    with torch.no_grad():
        norm.clamp_min_(eps)
    return t / norm


class Wav2Vec2Model(nn.Module):
    """fairseq's `Wav2Vec2Model`, with its parameter names, so checkpoints copy key by key."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.fairseq_cfg: Dict[str, Any] = {}  # the config groups of the file it was loaded from, if any
        conv_layers = cfg.conv_layers
        self.embed = conv_layers[-1][0]
        final_dim = cfg.final_dim if cfg.final_dim > 0 else cfg.encoder_embed_dim
        self.feature_extractor = ConvFeatureExtractionModel(conv_layers, cfg.extractor_mode, cfg.conv_bias)
        self.post_extract_proj = (
            nn.Linear(self.embed, cfg.encoder_embed_dim) if self.embed != cfg.encoder_embed_dim else None
        )
        self.dropout_input = Dropout(cfg.dropout_input)
        self.dropout_features = Dropout(cfg.dropout_features)
        self.quantizer: Optional[GumbelVectorQuantizer] = None
        if cfg.quantize_targets:
            vq_dim = cfg.latent_dim if cfg.latent_dim > 0 else final_dim
            self.quantizer = GumbelVectorQuantizer(
                self.embed, cfg.latent_vars, tuple(cfg.latent_temp), cfg.latent_groups, vq_dim  # type: ignore[arg-type]
            )
            self.project_q: Optional[nn.Linear] = nn.Linear(vq_dim, final_dim)
        else:
            self.project_q = nn.Linear(self.embed, final_dim)
        self.mask_emb = nn.Parameter(torch.empty(cfg.encoder_embed_dim).uniform_())
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(self.embed)
        self.target_glu = nn.Sequential(nn.Linear(final_dim, final_dim * 2), nn.GLU()) if cfg.target_glu else None
        self.final_proj: Optional[nn.Linear] = nn.Linear(cfg.encoder_embed_dim, final_dim)

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal the quantizer temperature for update `num_updates`."""
        if self.quantizer is not None:
            self.quantizer.set_num_updates(num_updates)

    def remove_pretraining_modules(self) -> None:
        """Drop the heads only pretraining uses (fine-tuned checkpoints lack their keys)."""
        self.quantizer = None
        self.project_q = None
        self.target_glu = None
        self.final_proj = None

    def output_padding_mask(self, padding_mask: Optional[torch.Tensor], frames: int) -> Optional[torch.Tensor]:
        """Frame-level padding mask (True = padding) from a sample-level one."""
        if padding_mask is None or not padding_mask.any():
            return None
        lengths = self.feature_extractor.output_lengths((~padding_mask).long().sum(-1))
        return torch.arange(frames, device=padding_mask.device)[None, :] >= lengths[:, None]

    def _features(self, source: torch.Tensor,
                  cnn_features: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """CNN features (B, T, C) after the layer norm, and the features penalty; `cnn_features` (B, C, T),
        if given, is the frozen CNN's output computed elsewhere (a `FeatureCache`)."""
        if cnn_features is not None:
            features = cnn_features
        elif self.cfg.feature_grad_mult > 0:
            features = self.feature_extractor(source)
            if self.cfg.feature_grad_mult != 1.0:
                features = GradMultiply.apply(features, self.cfg.feature_grad_mult)
        else:
            with torch.no_grad():
                features = self.feature_extractor(source)
        features_pen = features.float().pow(2).mean()
        return self.layer_norm(features.transpose(1, 2)), features_pen

    def apply_mask(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], mask_indices: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Replace masked frames by `mask_emb` and zero masked channels; returns (x, time mask)."""
        cfg = self.cfg
        batch, frames, channels = x.shape
        if cfg.mask_channel_prob > 0 and cfg.mask_channel_before:
            x = x.masked_fill(self._channel_mask(batch, channels, x.device).unsqueeze(1), 0.0)
        if cfg.mask_prob > 0:
            if mask_indices is None:
                mask_indices = torch.from_numpy(compute_mask_indices(
                    (batch, frames), padding_mask, cfg.mask_prob, cfg.mask_length, cfg.mask_selection,
                    cfg.mask_other, min_masks=2, no_overlap=cfg.no_mask_overlap, min_space=cfg.mask_min_space,
                    require_same_masks=cfg.require_same_masks, mask_dropout=cfg.mask_dropout,
                )).to(x.device)
            x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        else:
            mask_indices = None
        if cfg.mask_channel_prob > 0 and not cfg.mask_channel_before:
            x = x.masked_fill(self._channel_mask(batch, channels, x.device).unsqueeze(1), 0.0)
        return x, mask_indices

    def _channel_mask(self, batch: int, channels: int, device: torch.device) -> torch.Tensor:
        cfg = self.cfg
        mask = compute_mask_indices(
            (batch, channels), None, cfg.mask_channel_prob, cfg.mask_channel_length, cfg.mask_channel_selection,
            cfg.mask_channel_other, no_overlap=cfg.no_mask_channel_overlap, min_space=cfg.mask_channel_min_space,
        )
        return torch.from_numpy(mask).to(device)

    def forward(
        self,
        source: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        mask: bool = True,
        features_only: bool = False,
        layer: Optional[int] = None,
        mask_indices: Optional[torch.Tensor] = None,
        negative_indices: Optional[torch.Tensor] = None,
        cnn_features: Optional[torch.Tensor] = None,
    ) -> Dict[str, Any]:
        """fairseq's output dict: context features, or contrastive logits (1+K, B, M) in `x`."""
        features, features_pen = self._features(source, cnn_features)
        unmasked_features = features.clone()
        padding_mask = self.output_padding_mask(padding_mask, features.size(1))
        drop = features.size(1) % self.cfg.crop_seq_to_multiple
        if drop:
            features, unmasked_features = features[:, :-drop], unmasked_features[:, :-drop]
            padding_mask = padding_mask[:, :-drop] if padding_mask is not None else None
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = self.dropout_input(features)
        unmasked_features = self.dropout_features(unmasked_features)
        if mask:
            x, mask_indices = self.apply_mask(features, padding_mask, mask_indices)
        else:
            x, mask_indices = features, None
        x, layer_results = self.encoder(x, padding_mask=padding_mask, layer=layer)
        if features_only:
            return {"x": x, "padding_mask": padding_mask, "features": unmasked_features, "layer_results": layer_results}
        return self._contrastive(x, unmasked_features, mask_indices, padding_mask, features_pen, negative_indices)

    def _contrastive(
        self,
        x: torch.Tensor,
        unmasked: torch.Tensor,
        mask_indices: Optional[torch.Tensor],
        padding_mask: Optional[torch.Tensor],
        features_pen: torch.Tensor,
        negative_indices: Optional[torch.Tensor],
    ) -> Dict[str, Any]:
        """Targets at masked frames, distractors, and cosine logits."""
        assert self.project_q is not None and self.final_proj is not None, "pretraining heads were removed"
        batch, dim = unmasked.size(0), unmasked.size(-1)
        result: Dict[str, Any] = {"padding_mask": padding_mask, "features_pen": features_pen}
        if mask_indices is None:  # contrast every frame when nothing is masked
            mask_indices = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        targets = unmasked if self.cfg.negatives_from_everywhere else unmasked[mask_indices].view(batch, -1, dim)
        if self.quantizer is not None:
            q = self.quantizer(targets)
            targets = q["x"]
            result.update({k: q[k] for k in ("prob_perplexity", "code_perplexity", "num_vars", "temp")})
        targets = self.project_q(targets)
        num = int(mask_indices[0].sum())
        negs, result["negative_indices"] = sample_negatives(
            targets, num, self.cfg.num_negatives, self.cfg.cross_sample_negatives, 0, negative_indices
        )
        if self.cfg.negatives_from_everywhere:
            targets = targets[mask_indices].view(batch, -1, targets.size(-1))
        x = x[mask_indices].view(batch, -1, x.size(-1))
        if self.target_glu is not None:
            targets, negs = self.target_glu(targets), self.target_glu(negs)
        result["x"] = self.compute_preds(self.final_proj(x), targets, negs)
        return result

    def compute_preds(self, x: torch.Tensor, y: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Cosine similarity / logit_temp of x with [y, negatives]: (1+K, B, M); a negative equal to y gets -inf."""
        neg_is_pos = (y == negatives).all(-1)
        candidates = torch.cat([y.unsqueeze(0), negatives], dim=0)
        # torch.cosine_similarity's own steps, but x normalised once instead of once per candidate after
        # broadcasting: the same values, without (1+K) copies of x and their backward.
        logits = (_unit(x.float()).unsqueeze(0) * _unit(candidates.float())).sum(-1) / self.cfg.logit_temp
        logits = logits.type_as(x)
        if neg_is_pos.any():
            logits = torch.cat([logits[:1], logits[1:].masked_fill(neg_is_pos, float("-inf"))], dim=0)
        return logits

    def get_logits(self, net_output: Dict[str, Any]) -> torch.Tensor:
        """Contrastive logits as (B*M, 1+K) rows, the positive in column 0."""
        logits = net_output["x"].transpose(0, 2)
        return logits.reshape(-1, logits.size(-1))

    def get_extra_losses(self, net_output: Dict[str, Any]) -> list:
        """[codebook diversity penalty, features penalty], weighted by the criterion."""
        penalties = []
        if "prob_perplexity" in net_output:
            penalties.append((net_output["num_vars"] - net_output["prob_perplexity"]) / net_output["num_vars"])
        penalties.append(net_output["features_pen"])
        return penalties

    def quantize(self, source: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Quantized vectors (B, T, D) and code indices (B, T, G) for a waveform."""
        assert self.quantizer is not None, "this model has no quantizer"
        features = self.layer_norm(self.feature_extractor(source).transpose(1, 2))
        q = self.quantizer(features, produce_targets=True)
        return q["x"], q["targets"]

    def extract_features(
        self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, mask: bool = False,
        layer: Optional[int] = None, cnn_features: Optional[torch.Tensor] = None,
    ) -> Dict[str, Any]:
        """Context features without the contrastive head (fairseq's `extract_features`)."""
        return self.forward(source, padding_mask, mask=mask, features_only=True, layer=layer,
                            cnn_features=cnn_features)
