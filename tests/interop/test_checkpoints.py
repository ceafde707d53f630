"""Checkpoint interchange with fairseq: layout, key names, round trips, BASE sizes."""

from __future__ import annotations

import argparse
import csv

import pytest
import torch

import w2v2
from w2v2.data.dictionary import Dictionary
from w2v2.interop.checkpoints import build_model, save_checkpoint
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model

TOP_LEVEL = ["args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
             "last_optimizer_state"]


def read_keys(path) -> list:
    with open(path) as handle:
        return [(row[0], row[1]) for row in csv.reader(handle, delimiter="\t") if not row[0].startswith("#")]


def shapes(model: torch.nn.Module) -> list:
    return [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]


def test_tiny_models_have_fairseqs_keys_in_order(fairseq_dir):
    assert shapes(w2v2.load_model(fairseq_dir / "pretrain_init.pt")) == read_keys(fairseq_dir / "pretrain_state_dict_keys.tsv")
    assert shapes(w2v2.load_model(fairseq_dir / "ctc_init.pt")) == read_keys(fairseq_dir / "ctc_state_dict_keys.tsv")


def test_base_models_from_our_config_match_fairseq_sizes(fairseq_dir):
    base = Wav2Vec2Config.from_dict({"quantize_targets": True, "final_dim": 256})
    pretrain = Wav2Vec2Model(base)
    assert shapes(pretrain) == read_keys(fairseq_dir / "base_pretrain_state_dict_keys.tsv")
    assert len(pretrain.state_dict()) == 218
    assert sum(p.numel() for p in pretrain.parameters()) == 95_044_608
    ctc = Wav2Vec2Ctc(Wav2Vec2CtcConfig(), base, 32)
    assert shapes(ctc) == read_keys(fairseq_dir / "base_ctc_state_dict_keys.tsv")
    assert len(ctc.state_dict()) == 213
    assert sum(p.numel() for p in ctc.parameters()) == 94_396_320


@pytest.mark.parametrize("name", ["pretrain_init.pt", "ctc_init.pt"])
def test_round_trip_keeps_layout_and_outputs(fairseq_dir, pretrain_outputs, tmp_path, name):
    ours = w2v2.load_model(fairseq_dir / name)
    save_checkpoint(tmp_path / "ours.pt", ours)
    saved = load_checkpoint_file(tmp_path / "ours.pt")
    original = load_checkpoint_file(fairseq_dir / name)
    assert list(saved) == TOP_LEVEL
    assert list(saved["model"]) == list(original["model"])
    assert all(torch.equal(saved["model"][k], original["model"][k]) for k in original["model"])
    assert saved["cfg"]["model"]["_name"] == original["cfg"]["model"]["_name"]
    assert isinstance(saved["cfg"], dict) and saved["args"] is None
    again = w2v2.load_model(tmp_path / "ours.pt")
    source = pretrain_outputs["source"]
    with torch.no_grad():
        a, b = ours(source), again(source)
    key = "encoder_out" if name == "ctc_init.pt" else "x"
    if name == "pretrain_init.pt":
        with torch.no_grad():
            a, b = ours(source, features_only=True, mask=False), again(source, features_only=True, mask=False)
    assert torch.equal(a[key], b[key])


def test_saved_ctc_file_keeps_the_dictionary_as_fairseq_pickles_it(fairseq_dir, tmp_path):
    model = w2v2.load_model(fairseq_dir / "ctc_init.pt")
    save_checkpoint(tmp_path / "ctc.pt", model)
    raw = (tmp_path / "ctc.pt").read_bytes()
    assert b"fairseq.data.dictionary" in raw and b"w2v2.data" not in raw
    loaded = w2v2.load_model(tmp_path / "ctc.pt")
    assert isinstance(loaded.dictionary, Dictionary) and loaded.dictionary == model.dictionary
    # the w2v_args that fairseq rebuilds the encoder from are the pretraining config
    cfg = load_checkpoint_file(tmp_path / "ctc.pt")["cfg"]
    assert cfg["model"]["w2v_args"]["model"]["_name"] == "wav2vec2"


def test_our_pretraining_file_is_usable_as_w2v_path(fairseq_dir, tmp_path):
    pretrained = w2v2.load_model(fairseq_dir / "pretrain_init.pt")
    save_checkpoint(tmp_path / "pre.pt", pretrained)
    state = load_checkpoint_file(fairseq_dir / "ctc_init.pt")
    group = dict(state["cfg"]["model"], w2v_args=None, w2v_path=str(tmp_path / "pre.pt"))
    model = build_model({"model": group}, "test", state["model"])
    assert model.pretrained_cfg == pretrained.cfg


def test_args_era_checkpoint_converts_legacy_strings(fairseq_dir):
    model = w2v2.load_model(fairseq_dir / "args_era_pretrain.pt")
    assert model.cfg.latent_temp == (2.0, 0.5, 0.999995)
    assert model.cfg.conv_layers[0] == (32, 10, 5) and len(model.cfg.conv_layers) == 7


def test_legacy_ctc_args_with_nested_namespace(fairseq_dir, tmp_path):
    pre = torch.load(fairseq_dir / "args_era_pretrain.pt", weights_only=False)
    ctc = load_checkpoint_file(fairseq_dir / "ctc_init.pt")
    fields = dict(ctc["cfg"]["model"], arch="wav2vec_ctc", task="audio_finetuning", w2v_args=pre["args"])
    del fields["_name"]
    legacy = {"args": argparse.Namespace(**fields), "model": ctc["model"]}
    torch.save(legacy, tmp_path / "legacy_ctc.pt")
    model = w2v2.load_model(tmp_path / "legacy_ctc.pt")
    assert isinstance(model, Wav2Vec2Ctc) and model.pretrained_cfg.encoder_layers == 2


def test_a_saved_ctc_model_stores_the_encoder_fairseq_should_rebuild(tmp_path):
    """w2v_args.model is the encoder's config with the fine-tuning values in it: fairseq builds from
    w2v_args.model as stored and applies those values only when it reads w2v_path."""
    pretrained = Wav2Vec2Config(conv_feature_layers="[(32,10,5)]+[(32,3,2)]*2", encoder_layers=1,
                                encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                                feature_grad_mult=0.1, dropout=0.1, mask_prob=0.65)
    fine_tuning = Wav2Vec2CtcConfig(feature_grad_mult=0.0, dropout=0.05, mask_prob=0.3, layerdrop=0.2)
    given = {"task": {"_name": "audio_pretraining", "normalize": False}, "model": pretrained.to_dict()}
    for w2v_args in (None, given):  # built in code; read from a file whose w2v_args lack the fine-tuning values
        fine_tuning.w2v_args = w2v_args
        save_checkpoint(tmp_path / "ctc.pt", Wav2Vec2Ctc(fine_tuning, pretrained, 8))
        stored = load_checkpoint_file(tmp_path / "ctc.pt")["cfg"]["model"]["w2v_args"]["model"]
        assert (stored["feature_grad_mult"], stored["dropout"], stored["mask_prob"], stored["encoder_layerdrop"]) \
            == (0.0, 0.05, 0.3, 0.2)
        assert stored["encoder_layers"] == 1 and stored["conv_feature_layers"] == pretrained.conv_feature_layers
