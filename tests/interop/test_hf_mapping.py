"""The Hugging Face name table in both directions, the config fields, and what is refused, with why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model

import w2v2
from w2v2.errors import W2v2Error
from w2v2.interop.hf import convert_hf_folder, export_hf
from w2v2.interop.hf_mapping import NETWORK_FIELDS, TRAINING_FIELDS, WEIGHT_NORM_ALIASES, rename, weight_pairs
from w2v2.interop.safetensors_io import read_safetensors, write_safetensors
from tests.interop.hf_models import VARIANTS, tiny_model

HF_FIXTURES = Path(__file__).parents[1] / "fixtures" / "hf"


def hf_keys(folder: Path, ctc: bool) -> set:
    """The state-dict names transformers itself builds from the exported config.json."""
    config = Wav2Vec2Config.from_pretrained(folder)
    model = (Wav2Vec2ForCTC if ctc else Wav2Vec2ForPreTraining)(config)
    names = set(model.state_dict())
    for alias, name in WEIGHT_NORM_ALIASES:
        names = {k.replace(alias, name) for k in names}
    return names


@pytest.mark.parametrize("ctc", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_table_maps_every_tensor_both_ways(variant, ctc, tmp_path):
    ours = tiny_model(variant, ctc=ctc)
    layer_norm = VARIANTS[variant].get("extractor_mode") == "layer_norm"
    pairs = weight_pairs(ctc, layer_norm)
    result = export_hf(ours, tmp_path)
    mapped = {rename(k, pairs, to_hf=True) for k in ours.state_dict()}
    added = {note.split(":")[0] for note in result.added}
    expected = hf_keys(tmp_path, ctc)
    if added:  # the identity projection, in both its tensors
        assert variant == "same_width" and added == {"wav2vec2.feature_projection.projection.weight/bias"}
        expected -= {"wav2vec2.feature_projection.projection.weight", "wav2vec2.feature_projection.projection.bias"}
    assert None not in mapped and mapped == expected and not result.dropped
    assert result.copied == len(ours.state_dict())
    assert [rename(rename(k, pairs, True), pairs, False) for k in ours.state_dict()] == list(ours.state_dict())


@pytest.mark.parametrize("ctc", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_every_pair_is_used_and_every_tensor_matches_exactly_one(ctc, layer_norm):
    pairs = weight_pairs(ctc, layer_norm)
    keys = [k for name, variant in VARIANTS.items() if (variant.get("extractor_mode") == "layer_norm") == layer_norm
            for k in tiny_model(name, ctc=ctc).state_dict()]
    assert all(sum(rename(k, [pair], to_hf=True) is not None for pair in pairs) == 1 for k in keys)
    assert [pair for pair in pairs if not any(rename(k, [pair], to_hf=True) for k in keys)] == []


def test_config_fields_reach_transformers_and_come_back(tmp_path):
    ours = tiny_model("large", ctc=True, dropout=0.05, attention_dropout=0.07, activation_dropout=0.11,
                      dropout_input=0.02, layerdrop=0.03, mask_prob=0.3, mask_length=4, mask_channel_prob=0.2,
                      mask_channel_length=6, apply_mask=True, final_dropout=0.09)
    export_hf(ours, tmp_path)
    config = Wav2Vec2Config.from_pretrained(tmp_path)
    network = ours.w2v_encoder.w2v_model.cfg
    for field, theirs, _ in NETWORK_FIELDS:
        assert getattr(config, theirs) == getattr(network, field), field
    for ctc_field, field, theirs, _ in TRAINING_FIELDS:
        assert getattr(config, theirs) == getattr(network, field) == getattr(ours.cfg, ctc_field), field
    assert (config.conv_dim, config.conv_kernel, config.conv_stride) == ([24, 16, 24], [10, 5, 3], [5, 3, 2])
    assert config.feat_extract_norm == "layer" and config.do_stable_layer_norm and config.conv_bias
    assert (config.codevector_dim, config.proj_codevector_dim) == (12, 16)
    assert config.final_dropout == 0.09 and config.apply_spec_augment and config.vocab_size == 32
    back = w2v2.load_model(tmp_path)
    sources = {"w2v_path": None, "w2v_args": None}  # where each came from differs, and nothing else
    assert back.cfg.to_dict() | sources == ours.cfg.to_dict() | sources
    spelled = {"conv_feature_layers": None}  # "[(24,10,5),...]" comes back as "[(24, 10, 5), ...]"
    assert back.w2v_encoder.w2v_model.cfg.to_dict() | spelled == network.to_dict() | spelled
    assert back.w2v_encoder.w2v_model.feature_extractor.conv_spec == [(24, 10, 5), (16, 5, 3), (24, 3, 2)]


@pytest.mark.parametrize("ctc, normalize", [(False, False), (False, True), (True, False), (True, True)])
def test_do_normalize_is_true_exactly_for_models_trained_on_normalised_audio(ctc, normalize, tmp_path):
    export_hf(tiny_model("base", ctc=ctc, normalize=normalize), tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_normalize"] is normalize
    assert w2v2.load_model(tmp_path).fairseq_cfg["task"]["normalize"] is normalize


@pytest.mark.parametrize("change, message", [
    (dict(quantize_targets=False), "`model.quantize_targets` is False, which transformers cannot express: "
                                   "transformers' Wav2Vec2ForPreTraining always quantizes its targets."),
    (dict(target_glu=True), "`model.target_glu` is True, which transformers cannot express: transformers has no "
                            "GLU on the contrastive targets."),
    (dict(crop_seq_to_multiple=2), "`model.crop_seq_to_multiple` is 2, which transformers cannot express: "
                                   "transformers never crops the frame sequence."),
])
def test_export_refuses_what_transformers_cannot_express(change, message, tmp_path):
    with pytest.raises(W2v2Error) as error:
        export_hf(tiny_model("base", **change), tmp_path)
    assert str(error.value) == message
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("field, value, reason", [
    ("pos_conv_depth", 3, "transformers' Wav2Vec2 has a single positional convolution"),
    ("layer_type", "conformer", "transformers' Wav2Vec2 is a plain Transformer (conformers are another model)"),
    ("activation_fn", "relu", "transformers' Wav2Vec2 configs here use gelu"),
])
def test_export_refuses_architectures_our_configs_may_grow(field, value, reason, tmp_path):
    """Our config validation rejects these today; the export must not rely on that."""
    model = tiny_model("base", ctc=True)
    setattr(model.w2v_encoder.w2v_model.cfg, field, value)
    with pytest.raises(W2v2Error) as error:
        export_hf(model, tmp_path)
    assert str(error.value) == f"`model.{field}` is {value!r}, which transformers cannot express: {reason}."


def test_export_refuses_a_blank_weight_and_a_missing_dictionary(tmp_path):
    with pytest.raises(W2v2Error, match="`model.blank_weight` is 1.5, which transformers cannot express"):
        export_hf(tiny_model("base", ctc=True, blank_weight=1.5), tmp_path)
    model = tiny_model("base", ctc=True)
    model.dictionary = None
    with pytest.raises(W2v2Error, match=r"needs its letter dictionary \(32 symbols\).*stores none"):
        export_hf(model, tmp_path)


def copy_fixture(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(HF_FIXTURES / name, folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="hubert"), "describes a 'hubert' model; only transformers' wav2vec2 models"),
    (dict(hidden_act="relu"), "`hidden_act` in .* must be 'gelu' for a wav2vec 2.0 model we can build, but is 'relu'"),
    (dict(add_adapter=True), "`add_adapter` in .* must be False"),
    (dict(layer_norm_eps=1e-6), "`layer_norm_eps` in .* must be 1e-05"),
    (dict(conv_kernel=[10, 3]), "must have one entry per convolution each, but their lengths are"),
])
def test_import_refuses_configs_we_cannot_build(changes, message, tmp_path):
    folder = copy_fixture("tiny_pretrain", tmp_path)
    edit_json(folder / "config.json", **changes)
    with pytest.raises(W2v2Error, match=message):
        w2v2.load_model(folder)


def test_import_refuses_tensors_it_would_lose_and_heads_it_lacks(tmp_path):
    folder = copy_fixture("tiny_ctc", tmp_path)
    weights, metadata = read_safetensors(folder / "model.safetensors")
    adapter = {"wav2vec2.encoder.layers.0.adapter_layer.linear_1.weight": torch.zeros(2, 2)}
    write_safetensors(folder / "model.safetensors", {**weights, **adapter}, metadata)
    with pytest.raises(W2v2Error, match=r"tensors with no place in a fairseq wav2vec 2.0 model .*\(1 in all\): .*adapter_layer"):
        w2v2.load_model(folder)
    Wav2Vec2Model(Wav2Vec2Config.from_pretrained(folder)).save_pretrained(tmp_path / "bare")
    with pytest.raises(W2v2Error, match="neither a CTC head .* only Wav2Vec2ForCTC and Wav2Vec2ForPreTraining"):
        w2v2.load_model(tmp_path / "bare")


def test_import_of_equal_widths_drops_only_an_identity_projection(tmp_path):
    export_hf(tiny_model("same_width"), tmp_path / "ok")
    assert "post_extract_proj.weight" not in w2v2.load_model(tmp_path / "ok").state_dict()
    weights, metadata = read_safetensors(tmp_path / "ok" / "model.safetensors")
    weights["wav2vec2.feature_projection.projection.weight"] *= 2
    write_safetensors(tmp_path / "ok" / "model.safetensors", weights, metadata)
    with pytest.raises(W2v2Error, match="maps the CNN's 32 channels to as many, but is not the identity"):
        w2v2.load_model(tmp_path / "ok")


def test_a_folder_without_mask_embedding_gets_a_named_zero_one(tmp_path):
    folder = copy_fixture("tiny_ctc", tmp_path)
    weights, metadata = read_safetensors(folder / "model.safetensors")
    del weights["wav2vec2.masked_spec_embed"]
    write_safetensors(folder / "model.safetensors", weights, metadata)
    edit_json(folder / "config.json", mask_time_prob=0.0, mask_feature_prob=0.0)
    state, conversion = convert_hf_folder(folder)
    assert not state["model"]["w2v_encoder.w2v_model.mask_emb"].any()
    assert [note.split(":")[0] for note in conversion.added] == ["w2v_encoder.w2v_model.mask_emb"]
    export = export_hf(w2v2.load_model(folder), tmp_path / "back")  # and the way back leaves it out again
    assert [note.split(":")[0] for note in export.dropped] == ["w2v_encoder.w2v_model.mask_emb"]
    assert "wav2vec2.masked_spec_embed" not in read_safetensors(tmp_path / "back" / "model.safetensors")[0]


@pytest.mark.parametrize("vocab, settings, message", [
    ({"|": 0, "A": 1, "[UNK]": 2, "[PAD]": 3}, {}, r"must start with the pad \(CTC blank\), bos, eos and unk tokens"),
    (None, {"word_delimiter_token": "-"}, "separates words with '-'"),
    ({"<pad>": 0, "<s>": 1, "</s>": 2}, {}, "must number its tokens 0 to 31"),
])
def test_import_refuses_vocabularies_without_a_fairseq_equivalent(vocab, settings, message, tmp_path):
    folder = copy_fixture("tiny_ctc", tmp_path)
    if vocab is not None:
        if len(vocab) == 4:  # the right size, specials ordered as many community models have them
            vocab = {**vocab, **{f"x{i}": i + 4 for i in range(28)}}
        (folder / "vocab.json").write_text(json.dumps(vocab))
    if settings:
        edit_json(folder / "tokenizer_config.json", **settings)
    with pytest.raises(W2v2Error, match=message):
        w2v2.load_model(folder)


def test_folders_that_are_not_transformers_models_are_named(tmp_path):
    with pytest.raises(W2v2Error, match="is a folder without a config.json"):
        w2v2.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(W2v2Error, match="has a config.json but no weights: it must hold model.safetensors"):
        w2v2.load_model(tmp_path)
