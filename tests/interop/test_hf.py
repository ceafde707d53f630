"""Hugging Face interop: exported folders load in transformers with our outputs; imports give ours back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Processor, pipeline
from transformers.utils import logging as hf_logging

import w2v2
from w2v2.cli.main import main
from w2v2.interop.checkpoints import save_checkpoint
from w2v2.interop.hf import export_hf, import_hf
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.interop.safetensors_io import read_safetensors, write_safetensors
from w2v2.inference.features import model_input
from w2v2.inference.transcribe import load_audio
from w2v2.models.ctc import Wav2Vec2Ctc
from tests.interop.hf_models import VARIANTS, padded_batch, rel_err, tiny_model

HF_FIXTURES = Path(__file__).parents[1] / "fixtures" / "hf"
DEMO_FILE = Path(__file__).parents[2] / "examples" / "demo_corpus" / "dev-clean" / "2001/20010/2001-20010-0001.ogg"
hf_logging.set_verbosity_error()  # its progress bars and load reports are noise here


def hf_model(folder: Path, ctc: bool):
    """The folder loaded by transformers, which must find exactly the tensors it expects."""
    model, info = (Wav2Vec2ForCTC if ctc else Wav2Vec2ForPreTraining).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pretraining_export_gives_our_outputs_in_transformers(variant, tmp_path):
    ours = tiny_model(variant)
    export_hf(ours, tmp_path)
    theirs = hf_model(tmp_path, ctc=False)
    source, padding = padded_batch()
    with torch.no_grad():
        mine = ours(source, padding, mask=False, features_only=True)
        base = theirs.wav2vec2(source, attention_mask=(~padding).long(), output_hidden_states=True)
        heads = theirs(source, attention_mask=(~padding).long())
        quantized = ours.project_q(ours.quantizer(mine["features"])["x"])
        projected = ours.final_proj(mine["x"])
    assert rel_err(base.last_hidden_state, mine["x"]) <= 1e-5
    assert rel_err(base.extract_features, mine["features"]) <= 1e-5
    # hidden_states[0] is the Transformer's input, then one per layer; for a pre-LN model, transformers 5
    # gives the last layer's output before the final norm, transformers 4 after it (our `x`).
    layers = [layer_out.transpose(0, 1) for layer_out, _ in mine["layer_results"]]
    assert len(base.hidden_states) == len(layers) + 1
    for hidden, layer_out in zip(base.hidden_states[1:-1], layers):
        assert rel_err(hidden, layer_out) <= 1e-5
    assert min(rel_err(base.hidden_states[-1], layers[-1]), rel_err(base.hidden_states[-1], mine["x"])) <= 1e-5
    assert rel_err(heads.projected_states, projected) <= 1e-5
    assert rel_err(heads.projected_quantized_states, quantized) <= 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_ctc_export_gives_our_logits_and_log_probs_in_transformers(variant, tmp_path):
    ours = tiny_model(variant, ctc=True)
    export_hf(ours, tmp_path)
    theirs = hf_model(tmp_path, ctc=True)
    source, padding = padded_batch()
    with torch.no_grad():
        net = ours(source, padding)
        logits = theirs(source, attention_mask=(~padding).long()).logits.transpose(0, 1)  # (B, T, V) -> (T, B, V)
    assert net["padding_mask"] is not None and net["padding_mask"].any()
    assert rel_err(logits, net["encoder_out"]) <= 1e-5
    valid = ~net["padding_mask"].T
    lprobs = ours.get_normalized_probs(net, log_probs=True)
    assert rel_err(torch.log_softmax(logits, -1)[valid], lprobs[valid]) <= 1e-5


@pytest.mark.parametrize("ctc", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_through_transformers_is_bit_identical(variant, ctc, tmp_path):
    ours = tiny_model(variant, ctc=ctc)
    export_hf(ours, tmp_path / "ours_to_hf")
    assert_same_state(w2v2.load_model(tmp_path / "ours_to_hf"), ours)
    # transformers' own writer (torch parametrization names for the weight norm) reads back the same
    hf_model(tmp_path / "ours_to_hf", ctc).save_pretrained(tmp_path / "resaved")
    if ctc:
        Wav2Vec2Processor.from_pretrained(tmp_path / "ours_to_hf").save_pretrained(tmp_path / "resaved")
    back = w2v2.load_model(tmp_path / "resaved")
    assert_same_state(back, ours)
    if ctc:
        assert back.dictionary == ours.dictionary


def test_fairseq_fixtures_exported_give_fairseqs_outputs_in_transformers(fairseq_dir, pretrain_outputs,
                                                                         ctc_outputs, tmp_path):
    export_hf(fairseq_dir / "pretrain_init.pt", tmp_path / "pt")
    pretrained = hf_model(tmp_path / "pt", ctc=False).wav2vec2
    export_hf(fairseq_dir / "ctc_init.pt", tmp_path / "ctc")
    ctc = hf_model(tmp_path / "ctc", ctc=True)
    out = ctc_outputs
    with torch.no_grad():
        x = pretrained(pretrain_outputs["source"]).last_hidden_state
        x_pad = pretrained(pretrain_outputs["source_padded"],
                           attention_mask=(~pretrain_outputs["padding_mask_in"]).long()).last_hidden_state
        logits = ctc(out["source_padded"], attention_mask=(~out["padding_mask_in"]).long()).logits.transpose(0, 1)
    assert rel_err(x, pretrain_outputs["fo_x"]) <= 1e-5
    assert rel_err(x_pad, pretrain_outputs["fo_pad_x"]) <= 1e-5
    assert rel_err(logits, out["encoder_out"]) <= 1e-5
    valid = ~out["encoder_padding_mask"].T
    assert rel_err(torch.log_softmax(logits, -1)[valid], out["lprobs"][valid]) <= 1e-5


@pytest.mark.parametrize("name", ["tiny_pretrain", "tiny_ctc"])
def test_transformers_folders_import_to_what_fairseq_computed(name, tmp_path):
    """The folders were written by transformers; fairseq loaded their `w2v2 import-hf` output and computed
    fairseq_outputs.pt (see fixtures/hf/README.md)."""
    frozen = torch.load(HF_FIXTURES / "fairseq_outputs.pt", weights_only=True)
    folder = HF_FIXTURES / name
    import_hf(folder, tmp_path / "imported.pt")
    imported = w2v2.load_model(tmp_path / "imported.pt")
    assert_same_state(imported, w2v2.load_model(HF_FIXTURES / f"{name}_imported.pt"))  # what fairseq loaded
    assert_same_state(imported, w2v2.load_model(folder))
    source, padding = frozen["source"], frozen["padding_mask"]
    with torch.no_grad():
        if isinstance(imported, Wav2Vec2Ctc):
            lprobs = imported.get_normalized_probs(imported(source, padding))
            valid = torch.isfinite(frozen["ctc_lprobs"])
            assert torch.equal(torch.isfinite(lprobs), valid)  # padded frames forced to blank on both sides
            assert rel_err(lprobs[valid], frozen["ctc_lprobs"][valid]) <= 1e-5
            theirs = hf_model(folder, ctc=True)(source, attention_mask=(~padding).long()).logits.transpose(0, 1)
            frames = valid.all(-1)
            assert rel_err(torch.log_softmax(theirs, -1)[frames], frozen["ctc_lprobs"][frames]) <= 1e-5
        else:
            x = imported(source, mask=False, features_only=True)["x"]
            assert rel_err(x, frozen["pretrain_x"]) <= 1e-5
            assert rel_err(hf_model(folder, ctc=False).wav2vec2(source).last_hidden_state, frozen["pretrain_x"]) <= 1e-5


def test_pytorch_model_bin_folders_are_read_safely(tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(HF_FIXTURES / "tiny_ctc", folder)
    state = load_checkpoint_file(folder)["model"]
    weights = {k: v for k, v in hf_model(folder, ctc=True).state_dict().items()}
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    again = load_checkpoint_file(folder)["model"]
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    torch.save({"weights": weights, "hook": shutil.copytree}, folder / "pytorch_model.bin")  # a pickled function
    with pytest.raises(w2v2.errors.W2v2Error, match="weights_only=True") as error:
        load_checkpoint_file(folder)
    assert "shutil.copytree" in str(error.value) and "\n" not in str(error.value)  # one paragraph


def test_sharded_safetensors_folders_are_read_through_their_index(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(HF_FIXTURES / "tiny_pretrain", folder)
    weights, metadata = read_safetensors(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    weight_map = {}
    for number, part in enumerate((names[::2], names[1::2]), start=1):
        shard = f"model-0000{number}-of-00002.safetensors"
        write_safetensors(folder / shard, {k: weights[k] for k in part}, metadata)
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_state(w2v2.load_model(folder), w2v2.load_model(HF_FIXTURES / "tiny_pretrain"))


def test_our_safetensors_checkpoint_keeps_weights_config_and_dictionary(tmp_path):
    import_hf(HF_FIXTURES / "tiny_ctc", tmp_path / "ctc.safetensors")
    import_hf(HF_FIXTURES / "tiny_ctc", tmp_path / "ctc.pt")
    from_st, from_pt = w2v2.load_model(tmp_path / "ctc.safetensors"), w2v2.load_model(tmp_path / "ctc.pt")
    assert_same_state(from_st, from_pt)
    assert from_st.dictionary == from_pt.dictionary and from_st.cfg == from_pt.cfg
    assert load_checkpoint_file(tmp_path / "ctc.safetensors")["cfg"] == load_checkpoint_file(tmp_path / "ctc.pt")["cfg"]
    with pytest.raises(w2v2.errors.W2v2Error, match="pass the folder that holds it"):
        load_checkpoint_file(HF_FIXTURES / "tiny_ctc" / "model.safetensors")


def test_asr_pipeline_gives_the_text_of_w2v2_transcribe(tmp_path, capsys):
    model = tiny_model("base", ctc=True)
    waveform = load_audio(DEMO_FILE)
    head = model.w2v_encoder.proj
    with torch.no_grad():  # a readable random model: specials never win, blanks and word breaks often do
        head.bias[1:4] = -1e4  # <pad>, </s>, <unk>: kept as text by one side and dropped by the other
        logits = model(model_input(model, waveform))["encoder_out"][:, 0]
        for index, share in ((0, 0.15), (4, 0.25)):  # the blank, then `|`: each wins about this share of frames
            head.bias[index] += torch.quantile(logits.max(-1).values - logits[:, index], share)
    save_checkpoint(tmp_path / "ctc.pt", model)
    assert main(["export-hf", str(tmp_path / "ctc.pt"), str(tmp_path / "hf")]) == 0
    assert main(["transcribe", "--checkpoint", str(tmp_path / "ctc.pt"), str(DEMO_FILE)]) == 0
    ours = capsys.readouterr().out.strip().split("\t")[-1]
    recognizer = pipeline("automatic-speech-recognition", model=str(tmp_path / "hf"))
    theirs = recognizer({"raw": waveform, "sampling_rate": 16000})["text"]
    # Compared word by word: transformers keeps two spaces where two `|` frames have a blank between
    # them, while `w2v2 transcribe` joins words with one.
    assert len(ours.split()) >= 5 and theirs.split() == ours.split()
