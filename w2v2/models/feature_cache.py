"""The frozen feature encoder's output per utterance, computed once and reused (an option of fine-tuning).

fairseq runs the CNN over the padded batch. With `extractor_mode: layer_norm` every valid frame sees only
its own utterance's samples, so computing it on the utterance alone gives the same frames. With the
default group norm, each channel is normalised over the whole padded length, so a padded utterance's
frames differ slightly from those of the utterance alone (which is what inference computes).
"""

from __future__ import annotations

import hashlib
from typing import Dict, Optional

import torch

from w2v2.models.feature_encoder import ConvFeatureExtractionModel


class FeatureCache:
    """CNN outputs (C, T) by the utterance's audio (a hash of its samples), kept on the CPU.

    Keyed by content, not by index: the training and validation splits share one cache, and a cropped or
    changed utterance is a new entry rather than a wrong hit. Memory: channels x 50 frames per audio-second
    x the element size (100 KB per second in float32 at 512 channels, 36 GB for 100 hours)."""

    def __init__(self) -> None:
        self.entries: Dict[bytes, torch.Tensor] = {}
        self.hits = 0

    @property
    def misses(self) -> int:
        """Reads that ran the CNN: one per entry."""
        return len(self.entries)

    def features(self, extractor: ConvFeatureExtractionModel, source: torch.Tensor,
                 padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The CNN output (B, C, T) for a padded batch (B, samples): each row from its utterance alone, the
        frames past its length zero (the Transformer zeroes padded frames before using them)."""
        lengths = ([source.size(1)] * source.size(0) if padding_mask is None
                   else (~padding_mask).sum(-1).tolist())
        rows = [self._utterance(extractor, source[i, :length]) for i, length in enumerate(lengths)]
        frames = int(extractor.output_lengths(torch.tensor(source.size(1))))
        batch = rows[0].new_zeros(len(rows), rows[0].size(0), frames)
        for i, row in enumerate(rows):
            batch[i, :, :row.size(1)] = row
        return batch.to(source.device)

    def summary(self) -> str:
        """Entries, their size and the hit count, in words."""
        size = sum(t.numel() * t.element_size() for t in self.entries.values())
        reads = self.hits + self.misses
        return f"{len(self.entries)} utterances, {size / 2**20:.1f} MB, {self.hits} of {reads} reads hit"

    def _utterance(self, extractor: ConvFeatureExtractionModel, audio: torch.Tensor) -> torch.Tensor:
        # hashed through the buffer protocol: no copy of the samples on the CPU
        key = hashlib.blake2b(audio.detach().cpu().contiguous().numpy(), digest_size=16).digest()
        found = self.entries.get(key)
        if found is None:
            with torch.no_grad():
                found = self.entries[key] = extractor(audio.unsqueeze(0))[0].cpu()
        else:
            self.hits += 1
        return found
