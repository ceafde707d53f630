"""`FeatureCache`: the frozen CNN's output of each utterance alone, reused, in place of the batch's."""

from __future__ import annotations

import pytest
import torch

from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.feature_cache import FeatureCache
from tests.models.conftest import TINY


def padded_batch() -> tuple:
    """Two utterances, 8000 and 5000 samples, padded to 8000 (padding_mask True on padding)."""
    torch.manual_seed(0)
    source = torch.randn(2, 8000)
    source[1, 5000:] = 0.0
    padding_mask = torch.zeros(2, 8000, dtype=torch.bool)
    padding_mask[1, 5000:] = True
    return source, padding_mask


def ctc_model(mode: str) -> Wav2Vec2Ctc:
    torch.manual_seed(1)
    pretrained = Wav2Vec2Config.from_dict({**TINY, "extractor_mode": mode})
    return Wav2Vec2Ctc(Wav2Vec2CtcConfig.from_dict({"feature_grad_mult": 0.0}), pretrained, 12).eval()


def test_layer_norm_cnn_from_the_cache_gives_the_batchs_outputs():
    """With `extractor_mode: layer_norm` each valid frame depends on its own utterance only."""
    model, cache = ctc_model("layer_norm"), FeatureCache()
    source, padding_mask = padded_batch()
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    cached = cache.features(extractor, source, padding_mask)
    frames = int(extractor.output_lengths(torch.tensor(5000)))
    with torch.no_grad():
        batched = extractor(source)
        assert cached.shape == batched.shape
        torch.testing.assert_close(cached[0], batched[0])
        torch.testing.assert_close(cached[1, :, :frames], batched[1, :, :frames])
        assert not cached[1, :, frames:].any()  # padded frames: zeros, which the Transformer zeroes anyway
        ours = model(source, padding_mask, cnn_features=cached)["encoder_out"]
        theirs = model(source, padding_mask)["encoder_out"]
    torch.testing.assert_close(ours[:frames], theirs[:frames])
    assert (cache.misses, cache.hits) == (2, 0)


def test_entries_are_found_by_their_samples_wherever_they_stand_in_a_batch():
    model, cache = ctc_model("default"), FeatureCache()
    source, padding_mask = padded_batch()
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    first = cache.features(extractor, source, padding_mask)
    swapped = cache.features(extractor, source[[1, 0]], padding_mask[[1, 0]])
    assert (cache.misses, cache.hits) == (2, 2) and len(cache.entries) == 2
    assert torch.equal(swapped[0], first[1]) and torch.equal(swapped[1], first[0])
    louder = source.clone()
    louder[0] *= 2
    cache.features(extractor, louder, padding_mask)
    assert (cache.misses, cache.hits) == (3, 3)


def test_group_norm_cnn_differs_only_for_padded_utterances():
    """The default mode normalises over the padded length: the unpadded row is the batch's, the padded
    one is the utterance alone (what inference computes), not the batch's."""
    model = ctc_model("default")
    source, padding_mask = padded_batch()
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    cached = FeatureCache().features(extractor, source, padding_mask)
    frames = int(extractor.output_lengths(torch.tensor(5000)))
    with torch.no_grad():
        batched, alone = extractor(source), extractor(source[1:, :5000])
    torch.testing.assert_close(cached[0], batched[0])
    torch.testing.assert_close(cached[1, :, :frames], alone[0])
    with pytest.raises(AssertionError):
        torch.testing.assert_close(cached[1, :, :frames], batched[1, :, :frames])


def test_cached_features_keep_the_cnn_out_of_the_backward():
    model = ctc_model("default").train()
    source, padding_mask = padded_batch()
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    calls = []
    extractor.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    cache = FeatureCache()
    for _ in range(2):
        features = cache.features(extractor, source, padding_mask)
        model(source, padding_mask, cnn_features=features)["encoder_out"].sum().backward()
    assert len(calls) == 2  # one per utterance, the first time only
    assert all(p.grad is None for p in extractor.parameters()) and model.w2v_encoder.proj.weight.grad is not None
