"""`w2v2 export-hf` / `import-hf`, and fine-tuning with `model.w2v_path` set to a transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import w2v2
from w2v2.cli.hydra_train import main as hydra_train
from w2v2.cli.main import main
from w2v2.interop.checkpoints import save_checkpoint
from w2v2.interop.safe_load import load_checkpoint_file
from tests.corpus import FIXTURE_CONFIGS
from tests.interop.hf_models import tiny_model

HF_PRETRAINED = Path(__file__).parents[1] / "fixtures" / "hf" / "tiny_pretrain"


def test_export_writes_the_processor_files_and_only_safetensors(fairseq_dir, tmp_path, capsys):
    assert main(["export-hf", str(fairseq_dir / "ctc_init.pt"), str(tmp_path / "hf")]) == 0
    assert "wrote Wav2Vec2ForCTC to" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
        "tokenizer_config.json", "vocab.json"]
    symbols = w2v2.load_model(fairseq_dir / "ctc_init.pt").dictionary.symbols
    vocab = json.loads((tmp_path / "hf" / "vocab.json").read_text())
    assert vocab == {token: i for i, token in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + symbols[4:])}
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["word_delimiter_token"] == "|"
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["do_normalize"] is False


def test_import_writes_a_checkpoint_in_fairseqs_layout(tmp_path, capsys):
    assert main(["import-hf", str(HF_PRETRAINED), str(tmp_path / "pt.pt")]) == 0
    assert "wrote a wav2vec2 checkpoint to" in capsys.readouterr().out
    state = load_checkpoint_file(tmp_path / "pt.pt")
    assert list(state) == ["args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
                           "last_optimizer_state"]
    assert state["cfg"]["model"]["_name"] == "wav2vec2" and state["cfg"]["task"]["_name"] == "audio_pretraining"


def test_refusals_print_one_paragraph_and_exit_2(tmp_path, capsys):
    save_checkpoint(tmp_path / "glu.pt", tiny_model("base", target_glu=True))
    assert main(["export-hf", str(tmp_path / "glu.pt"), str(tmp_path / "out")]) == 2
    assert "w2v2 export-hf: error: `model.target_glu` is True" in capsys.readouterr().err
    assert main(["import-hf", str(tmp_path), str(tmp_path / "x.pt")]) == 2
    assert "w2v2 import-hf: error: " in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_finetuning_starts_from_a_transformers_folder(tiny_manifest, tmp_path):
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_ctc", f"task.data={tiny_manifest}",
            f"model.w2v_path={HF_PRETRAINED}", f"hydra.run.dir={tmp_path}", "optimization.max_update=2"]
    assert hydra_train(args) == 0
    saved = load_checkpoint_file(tmp_path / "checkpoints" / "checkpoint_last.pt")
    assert saved["cfg"]["model"]["w2v_args"]["model"]["encoder_embed_dim"] == 32
    assert saved["optimizer_history"][-1]["num_updates"] == 2
    # tiny_ctc freezes the pretrained network for 5 updates: it must still hold the folder's weights
    pretrained = w2v2.load_model(HF_PRETRAINED).state_dict()
    prefix = "w2v_encoder.w2v_model."
    network = {k[len(prefix):]: v for k, v in saved["model"].items() if k.startswith(prefix)}
    assert network and all(torch.equal(v, pretrained[k]) for k, v in network.items())
    heads = {k for k in pretrained if k.startswith(("quantizer.", "project_q.", "final_proj."))}
    assert heads and set(pretrained) - set(network) == heads
