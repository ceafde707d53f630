import logging

import numpy as np
import pytest
import soundfile
import torch

from w2v2.data.datasets import FinetuningDataset, PretrainingDataset
from w2v2.data.dictionary import Dictionary
from w2v2.data.sampler import ItemKey
from w2v2.errors import W2v2Error

LETTERS = Dictionary(list("|EHLOTW"))


def write_corpus(root, lengths, seed=0):
    """FLAC files `spk/u{i}.flac` of 16-bit-exact noise; returns (entries, samples per file)."""
    rng = np.random.default_rng(seed)
    (root / "spk").mkdir(parents=True, exist_ok=True)
    entries, waves = [], []
    for i, frames in enumerate(lengths):
        wave = (rng.integers(-20000, 20000, size=frames) / 32768).astype(np.float32)
        soundfile.write(root / "spk" / f"u{i}.flac", wave, 16000)
        entries.append((f"spk/u{i}.flac", frames))
        waves.append(wave)
    return entries, waves


def test_pretraining_batch_crops_to_the_shortest_at_seeded_offsets(tmp_path):
    entries, waves = write_corpus(tmp_path, [3000, 2000, 2500])
    dataset = PretrainingDataset(tmp_path, entries, max_sample_size=10**6, seed=5)
    batch = dataset.collater([dataset[ItemKey(i, epoch=2)] for i in range(3)])
    source = batch["net_input"]["source"]
    assert source.shape == (3, 2000) and set(batch["net_input"]) == {"source"}
    starts = []
    for row, wave in zip(source.numpy(), waves):
        windows = [s for s in range(len(wave) - 1999) if np.array_equal(wave[s : s + 2000], row)]
        assert len(windows) == 1
        starts.append(windows[0])
    assert starts[1] == 0 and starts != [0, 0, 0]
    again = PretrainingDataset(tmp_path, entries, max_sample_size=10**6, seed=5)
    assert torch.equal(again.collater([again[ItemKey(i, epoch=2)] for i in range(3)])["net_input"]["source"], source)
    other_epoch = dataset.collater([dataset[ItemKey(i, epoch=3)] for i in range(3)])["net_input"]["source"]
    assert not torch.equal(other_epoch, source)
    assert batch["audio_seconds"] == pytest.approx(6000 / 16000)
    assert batch["cropped_fraction"] == pytest.approx(1 - 6000 / 7500) and batch["padding_fraction"] == 0.0


def test_pretraining_crop_is_bounded_by_max_sample_size_and_so_are_batch_lengths(tmp_path):
    entries, _ = write_corpus(tmp_path, [3000, 2000, 2500])
    dataset = PretrainingDataset(tmp_path, entries, max_sample_size=1500)
    assert dataset.batch_lengths.tolist() == [1500, 1500, 1500]
    assert dataset.collater([dataset[i] for i in range(3)])["net_input"]["source"].shape == (3, 1500)
    sampler = dataset.batch_sampler(max_tokens=3000)
    assert sorted(len(batch) for batch in sampler.batches()) == [1, 2]
    with pytest.raises(W2v2Error, match="`max_sample_size` must be a positive frame count, but is 0"):
        PretrainingDataset(tmp_path, entries, max_sample_size=0)


def test_enable_padding_pads_pretraining_batches_to_the_longest_crop(tmp_path):
    entries, waves = write_corpus(tmp_path, [3000, 1000, 2500])
    padded = PretrainingDataset(tmp_path, entries, max_sample_size=2800, pad=True)
    batch = padded.collater([padded[i] for i in range(3)])
    source, mask = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    assert source.shape == (3, 2800)  # the longest item, cropped to max_sample_size
    assert mask.sum(1).tolist() == [0, 1800, 300]
    assert torch.equal(source[1, :1000], torch.as_tensor(waves[1], dtype=source.dtype)) and not source[1, 1000:].any()
    cropped = PretrainingDataset(tmp_path, entries, max_sample_size=2800)
    assert cropped.collater([cropped[i] for i in range(3)])["net_input"]["source"].shape == (3, 1000)


def test_finetuning_batch_is_padded_with_mask_and_targets(tmp_path):
    entries, waves = write_corpus(tmp_path, [1000, 1600, 700])
    labels = ["H E L L O |", "W O |", "T O |"]
    dataset = FinetuningDataset(tmp_path, entries, labels, LETTERS)
    batch = dataset.collater([dataset[i] for i in (1, 0, 2)])
    source, mask = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    assert source.shape == mask.shape == (3, 1600) and mask.dtype == torch.bool
    for row, index in enumerate((1, 0, 2)):
        size = len(waves[index])
        np.testing.assert_array_equal(source[row, :size].numpy(), waves[index])
        assert not mask[row, :size].any() and mask[row, size:].all()
        assert torch.count_nonzero(source[row, size:]) == 0
    assert batch["id"].tolist() == [1, 0, 2] and batch["nsentences"] == 3
    assert batch["target_lengths"].tolist() == [3, 6, 3] and batch["ntokens"] == 12
    assert LETTERS.string(batch["target"][1]) == "H E L L O |"
    assert batch["target"][0, 3:].tolist() == [LETTERS.pad()] * 3
    assert batch["padding_fraction"] == pytest.approx(1 - 3300 / 4800) and batch["cropped_fraction"] == 0.0
    assert batch["audio_seconds"] == pytest.approx(3300 / 16000) and batch["repeated"] is False


def test_repeated_keys_mark_the_batch(tmp_path):
    entries, _ = write_corpus(tmp_path, [100, 100])
    dataset = PretrainingDataset(tmp_path, entries)
    assert dataset.collater([dataset[ItemKey(0, 1, repeated=True)], dataset[ItemKey(1, 1, True)]])["repeated"]


def test_normalize_gives_zero_mean_unit_variance_per_utterance(tmp_path):
    entries, waves = write_corpus(tmp_path, [4000])
    source = PretrainingDataset(tmp_path, entries, normalize=True)[0]["source"]
    assert abs(float(source.mean())) < 1e-5 and float(source.std(unbiased=False)) == pytest.approx(1, abs=1e-3)
    np.testing.assert_allclose(source.numpy(), (waves[0] - waves[0].mean()) / waves[0].std(), atol=1e-4)


def test_min_sample_size_skips_audio_with_its_labels(tmp_path):
    entries, waves = write_corpus(tmp_path, [500, 2000, 300, 1500])
    labels = ["H |", "E |", "L |", "O |"]
    dataset = FinetuningDataset(tmp_path, entries, labels, LETTERS, min_sample_size=1000)
    assert len(dataset) == 2 and dataset.num_skipped == 2 and dataset.sizes.tolist() == [2000, 1500]
    for index, (wave, label) in enumerate([(waves[1], "E |"), (waves[3], "O |")]):
        item = dataset[index]
        np.testing.assert_array_equal(item["source"].numpy(), wave)
        assert LETTERS.string(item["target"]) == label


def test_unknown_symbols_become_unk_with_one_warning_and_a_count(tmp_path, caplog):
    entries, _ = write_corpus(tmp_path, [100, 100, 100])
    with caplog.at_level(logging.WARNING):
        dataset = FinetuningDataset(tmp_path, entries, ["H X |", "Q Q |", "E |"], LETTERS, labels_name="t.ltr")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "t.ltr: 3 label symbols" in warnings[0].getMessage()
    assert "'Q', 'X'" in warnings[0].getMessage()
    assert dataset[1]["target"].tolist() == [LETTERS.unk(), LETTERS.unk(), LETTERS.index("|")]


def test_label_count_must_match_the_manifest(tmp_path):
    entries, _ = write_corpus(tmp_path, [100, 100])
    with pytest.raises(W2v2Error, match="t.ltr must have one line per manifest entry, 2 lines, but has 1"):
        FinetuningDataset(tmp_path, entries, ["H |"], LETTERS, labels_name="t.ltr")


def test_frames_differing_from_the_manifest_are_an_error(tmp_path):
    entries, _ = write_corpus(tmp_path, [100])
    dataset = PretrainingDataset(tmp_path, [("spk/u0.flac", 120)])
    with pytest.raises(W2v2Error, match=r"u0\.flac has 100 frames, but its manifest line says 120"):
        dataset[0]


def test_missing_file_error_names_it(tmp_path):
    dataset = PretrainingDataset(tmp_path, [("spk/gone.flac", 100)])
    with pytest.raises(W2v2Error, match=r"gone\.flac does not exist"):
        dataset[0]


def test_finetuning_sampler_drops_items_longer_than_max_tokens(tmp_path):
    entries, _ = write_corpus(tmp_path, [100, 900, 300])
    dataset = FinetuningDataset(tmp_path, entries, ["H |"] * 3, LETTERS)
    sampler = dataset.batch_sampler(max_tokens=600, seed=3)
    assert sampler.num_dropped == 1 and sorted(key.index for batch in sampler for key in batch) == [0, 2]


def test_from_manifest_reads_a_fairseq_manifest_and_labels(tmp_path):
    entries, waves = write_corpus(tmp_path / "audio", [400, 800])
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{tmp_path / 'audio'}\n" + "".join(f"{p}\t{n}\n" for p, n in entries))
    (tmp_path / "train.ltr").write_text("H E |\nW O |\n")
    pretraining = PretrainingDataset.from_manifest(manifest, max_sample_size=600)
    assert pretraining.batch_lengths.tolist() == [400, 600]
    finetuning = FinetuningDataset.from_manifest(manifest, tmp_path / "train.ltr", LETTERS, min_sample_size=500)
    item = finetuning[0]
    np.testing.assert_array_equal(item["source"].numpy(), waves[1])
    assert LETTERS.string(item["target"]) == "W O |"
