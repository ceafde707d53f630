"""The task and criterion keys: which audio and labels a run reads, how the criteria weigh and
normalise, and how the fine-tuning model starts. Each test fails if its key were ignored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train.task import build_ctc_model, setup_task
from tests.train.tiny_configs import PRETRAINED, finetuning, pretraining

TASKS = ["audio_pretraining", "audio_finetuning"]


def train_set(make, manifest: Path, name: str, *overrides: str):
    """The training dataset of config maker `make` (pretraining or finetuning) with task `name`."""
    return setup_task(make(manifest, f"task._name={name}", *overrides)).dataset("train", True)


def batch_of(task, split: str = "train", count: int = 2) -> dict:
    """The batch of the first `count` items of `split`, as training collates it."""
    dataset = task.dataset(split, True)
    return dataset.collater([dataset[i] for i in range(count)])


@pytest.mark.parametrize("name", TASKS)
def test_task_data_is_the_folder_read(tiny_manifest, tmp_path, name):
    fewer = tmp_path / "fewer"
    shutil.copytree(tiny_manifest, fewer)
    lines = (fewer / "train.tsv").read_text().splitlines(keepends=True)
    (fewer / "train.tsv").write_text("".join(lines[:6]))  # the root line and five files
    (fewer / "train.ltr").write_text("".join((fewer / "train.ltr").read_text().splitlines(keepends=True)[:5]))
    for make in (pretraining, finetuning):
        assert [len(train_set(make, data, name)) for data in (tiny_manifest, fewer)] == [len(lines) - 1, 5]


@pytest.mark.parametrize("name", TASKS)
def test_task_labels_name_the_label_files(tiny_manifest, tmp_path, name):
    data = tmp_path / "data"
    shutil.copytree(tiny_manifest, data)
    count = len((data / "train.ltr").read_text().splitlines())
    (data / "train.abc").write_text("A B |\n" * count)
    (data / "dict.abc.txt").write_text("A 1\nB 1\n| 1\n")
    task = setup_task(finetuning(data, f"task._name={name}", "task.labels=abc"))
    assert task.dictionary.symbols[4:] == ["A", "B", "|"]
    assert [task.dictionary.string(t) for t in batch_of(task)["target"]] == ["A B |", "A B |"]
    assert [task.dictionary.string(t) for t in batch_of(setup_task(finetuning(data)))["target"]] != ["A B |"] * 2


@pytest.mark.parametrize("name", TASKS)
def test_sample_rate_is_the_rate_every_file_must_have(tiny_manifest, name):
    for make in (pretraining, finetuning):
        with pytest.raises(W2v2Error, match="8000"):
            train_set(make, tiny_manifest, name, "task.sample_rate=8000")[0]


@pytest.mark.parametrize("name", TASKS)
def test_normalize_gives_zero_mean_unit_variance_audio(tiny_manifest, name):
    for make in (pretraining, finetuning):
        raw = train_set(make, tiny_manifest, name)[0]["source"]
        normed = train_set(make, tiny_manifest, name, "task.normalize=true")[0]["source"]
        assert float(raw.std()) < 0.5  # the corpus is noise of standard deviation 0.1
        assert float(normed.std()) == pytest.approx(1.0, abs=1e-3) and abs(float(normed.mean())) < 1e-4


@pytest.mark.parametrize("name", TASKS)
def test_enable_padding_pads_pretraining_batches_instead_of_cropping(tiny_manifest, name):
    padded = batch_of(setup_task(pretraining(tiny_manifest, f"task._name={name}", "task.enable_padding=true")), count=4)
    cropped = batch_of(setup_task(pretraining(tiny_manifest, f"task._name={name}")), count=4)
    assert "padding_mask" in padded["net_input"] and padded["net_input"]["padding_mask"].any()
    assert "padding_mask" not in cropped["net_input"]
    assert padded["net_input"]["source"].size(1) > cropped["net_input"]["source"].size(1)


@pytest.mark.parametrize("name", TASKS)
def test_max_sample_size_bounds_the_pretraining_crop(tiny_manifest, name):
    task = setup_task(pretraining(tiny_manifest, f"task._name={name}", "task.max_sample_size=12000"))
    assert batch_of(task)["net_input"]["source"].size(1) == 12000
    default = setup_task(pretraining(tiny_manifest, f"task._name={name}"))  # 32000 in the YAML
    assert batch_of(default)["net_input"]["source"].size(1) > 12000


@pytest.mark.parametrize("name", TASKS)
def test_min_sample_size_leaves_short_files_out(tiny_manifest, name):
    for make in (pretraining, finetuning):
        every = len(train_set(make, tiny_manifest, name, "task.min_sample_size=0"))
        longer = len(train_set(make, tiny_manifest, name, "task.min_sample_size=24000"))
        assert 0 < longer < every


@pytest.mark.parametrize("name", TASKS)
def test_task_seed_picks_the_crops(tiny_manifest, name):
    crops = [batch_of(setup_task(pretraining(tiny_manifest, f"task._name={name}", *seed)))["net_input"]["source"]
             for seed in ([], ["task.seed=1"], ["task.seed=7"])]
    assert torch.equal(crops[0], crops[1]) and not torch.equal(crops[0], crops[2])


def contrastive_logs(manifest: Path, *overrides: str) -> dict:
    """The contrastive criterion's logs for a fresh seeded model on the first training batch."""
    task = setup_task(pretraining(manifest, *overrides))
    torch.manual_seed(0)
    model = task.build_model()
    torch.manual_seed(1)
    return task.criterion()(model, model, batch_of(task)).logs


def test_loss_weights_weigh_the_extra_losses(tiny_manifest):
    weighted = contrastive_logs(tiny_manifest)  # the YAML's [0.1, 10]
    heavier = contrastive_logs(tiny_manifest, "criterion.loss_weights=[1.0,100.0]")
    none = contrastive_logs(tiny_manifest, "criterion.loss_weights=[0,0]")
    assert heavier["loss_0"] == pytest.approx(weighted["loss_0"]) and "loss_1" not in none
    for term in ("loss_1", "loss_2"):  # the diversity and feature penalties, each 10 times heavier
        assert heavier[term] == pytest.approx(10 * weighted[term])
    assert none["loss"] == pytest.approx(weighted["loss_0"])


def ctc_logs(manifest: Path, batch: Optional[dict] = None, *overrides: str) -> dict:
    """The CTC criterion's logs for the fine-tuning model (eval mode) on `batch` or the first training batch."""
    cfg = finetuning(manifest, *overrides)
    task = setup_task(cfg)
    torch.manual_seed(0)
    model = build_ctc_model(cfg, task.dictionary).eval()
    out = task.criterion()(model, model, batch or batch_of(task))
    return out.logs


def test_sentence_avg_normalises_by_utterances(tiny_manifest):
    letters = ctc_logs(tiny_manifest, None, "optimization.sentence_avg=false")
    utterances = ctc_logs(tiny_manifest, None, "optimization.sentence_avg=true")  # the link fills the criterion's
    overridden = ctc_logs(tiny_manifest, None, "optimization.sentence_avg=true", "criterion.sentence_avg=false")
    assert utterances["sample_size"] == 2 and letters["sample_size"] == letters["ntokens"] > 2
    assert overridden["sample_size"] == letters["sample_size"]


def test_zero_infinity_zeroes_impossible_alignments(tiny_manifest):
    source = torch.randn(1, 4000)  # 11 frames: too few for 30 letters
    target = torch.full((1, 30), 5, dtype=torch.long)
    target[0, ::2] = 6
    net_input = {"source": source, "padding_mask": torch.zeros(1, 4000, dtype=torch.bool)}
    batch = {"id": torch.tensor([0]), "net_input": net_input, "target": target, "target_lengths": torch.tensor([30]),
             "ntokens": 30, "nsentences": 1}
    assert ctc_logs(tiny_manifest, batch, "criterion.zero_infinity=false")["loss"] == float("inf")
    assert ctc_logs(tiny_manifest, batch, "criterion.zero_infinity=true")["loss"] == 0.0


def encoder_weights(model) -> dict:
    """The state dict of the fine-tuning model's pretrained part."""
    return model.w2v_encoder.w2v_model.state_dict()


def test_w2v_path_weights_start_the_model_unless_no_pretrained_weights(tiny_manifest):
    pretrained = load_checkpoint_file(PRETRAINED)["model"]
    cfg = finetuning(tiny_manifest)
    loaded = encoder_weights(build_ctc_model(cfg, setup_task(cfg).dictionary))
    assert loaded and all(torch.equal(value, pretrained[key]) for key, value in loaded.items())
    fresh_cfg = finetuning(tiny_manifest, "model.no_pretrained_weights=true")
    fresh = encoder_weights(build_ctc_model(fresh_cfg, setup_task(fresh_cfg).dictionary))
    assert fresh.keys() == loaded.keys() and not torch.equal(fresh["encoder.layers.0.fc1.weight"],
                                                             pretrained["encoder.layers.0.fc1.weight"])


def test_w2v_args_build_the_encoder_without_reading_w2v_path(tiny_manifest):
    cfg = finetuning(tiny_manifest)
    pretraining_cfg = load_checkpoint_file(PRETRAINED)["cfg"]
    cfg.model.w2v_args = {**pretraining_cfg, "model": {**pretraining_cfg["model"], "encoder_layers": 1}}
    cfg.model.w2v_path = str(PRETRAINED.with_name("no_such_file.pt"))
    model = build_ctc_model(cfg, setup_task(cfg).dictionary)
    assert len(model.w2v_encoder.w2v_model.encoder.layers) == 1


def test_model_normalize_must_match_the_pretraining(tiny_manifest):
    cfg = finetuning(tiny_manifest, "model.normalize=true")
    with pytest.raises(W2v2Error, match=r"`model.normalize` \(True\) must both equal the pretraining task's normalize"):
        build_ctc_model(cfg, setup_task(cfg).dictionary)
