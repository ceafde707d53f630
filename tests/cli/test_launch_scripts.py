"""The Ascend-fork launch scripts (test/train_*.sh) and their summary (w2v2.cli.launch_summary)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from w2v2 import Wav2Vec2Config, Wav2Vec2Model, save_checkpoint
from w2v2.cli.launch_summary import case_name, figures, main
from w2v2.errors import W2v2Error
from tests.corpus import write_corpus

SCRIPTS = Path(__file__).parents[2] / "test"
NEEDS_SHELL = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("bash", "awk", "grep", "tail")),
                                 reason="needs bash, awk, grep and tail")

# Console output of a fine-tuning run, as fairseq-hydra-train prints it (values shortened).
SAMPLE_LOG = """\
[2026-01-01 10:00:00,000][w2v2.train][INFO] - config base_100h.yaml, run directory /runs/0
[2026-01-01 10:00:10,000][train_inner][INFO] - {"epoch": 1, "loss": "1520.3", "wps": "4810.2", "num_updates": "200"}
[2026-01-01 10:01:00,000][train][INFO] - {"epoch": 1, "train_loss": "900.1", "train_wps": "5101.4", \
"train_audio_s_per_s": "24.3", "train_ups": "1.9", "train_wpb": "2688", "train_bsz": "32", "train_num_updates": "892"}
[2026-01-01 10:01:30,000][valid][INFO] - {"epoch": 1, "valid_loss": "80.2", "valid_wer": "21.5", \
"valid_num_updates": "892", "valid_best_wer": "21.5"}
epoch 002:  50%|#####     | 446/892 [04:00<04:00, 1.86upd/s]
[2026-01-01 10:02:10,000][train_inner][INFO] - {"epoch": 2, "loss": "410.7", "wps": "5590.1", "num_updates": "1000"}
[2026-01-01 10:03:00,000][train][INFO] - {"epoch": 2, "train_loss": "400.5", "train_wps": "5524.7", \
"train_audio_s_per_s": "26.1", "train_ups": "2.05", "train_wpb": "2695", "train_bsz": "30", "train_num_updates": "1784"}
[2026-01-01 10:03:30,000][valid][INFO] - {"epoch": 2, "valid_loss": "30.9", "valid_wer": "9.87", \
"valid_num_updates": "1784", "valid_best_wer": "9.87"}
[2026-01-01 10:03:40,000][train_inner][INFO] - {"epoch": 3, "loss": "380.2", "wps": "5400.3", "num_updates": "1800"}
[2026-01-01 10:04:00,000][train][INFO] - {"epoch": 3, "train_loss": "379.9", "train_wps": "5488", \
"train_audio_s_per_s": "25.9", "train_ups": "2.01", "train_wpb": "2690", "train_bsz": "31", "train_num_updates": "1810"}
[2026-01-01 10:04:30,000][valid][INFO] - {"epoch": 3, "valid_loss": "33.1", "valid_wer": "10.2", \
"valid_num_updates": "1810", "valid_best_wer": "9.87"}
"""


def users_awk(log: Path) -> List[str]:
    """FPS and WER the way the fork's scripts read them: text after the key, cut by position."""
    fps = ("grep -a train_wps \"$1\" | awk -F train_wps '{print $NF}'"
           " | awk -F , '{print substr($1, 5, length($1) - 5)}'"
           " | awk 'BEGIN {m = 0} {if ($1 + 0 > m) m = $1 + 0} END {print m}'")
    wer = ("grep -a valid_best_wer \"$1\" | awk -F valid_best_wer '{print $NF}'"
           " | awk -F , '{print substr($1, 5, length($1) - 6)}' | tail -n 1")
    return [subprocess.run(["bash", "-c", command, "awk", str(log)], capture_output=True, text=True,
                           check=True).stdout.strip() for command in (fps, wer)]


def test_figures_of_a_fine_tuning_log():
    figs = figures(SAMPLE_LOG)
    assert figs.fps == "5524.7"  # the fastest epoch, not the last one, nor a train_inner wps
    assert figs.audio_s_per_s == "26.1"
    assert figs.ms_per_update == pytest.approx(1000 / 2.05)
    assert figs.utterances_per_update == pytest.approx(31.0)
    assert figs.best_wer == "9.87"
    assert figs.last_loss == "379.9"


def test_a_log_without_train_wps_is_an_error():
    with pytest.raises(W2v2Error, match="no `train_wps`"):
        figures(SAMPLE_LOG.replace("train_wps", "train_xyz"), "train_0.log")


@NEEDS_SHELL
def test_the_users_awk_parsing_agrees(tmp_path):
    log = tmp_path / "train_0.log"
    log.write_text(SAMPLE_LOG)
    figs = figures(SAMPLE_LOG)
    assert users_awk(log) == [figs.fps, figs.best_wer]


@pytest.mark.parametrize("mode", ["perf", "acc"])
def test_summary_is_printed_and_written(tmp_path, capsys, mode):
    log = tmp_path / "train_0.log"
    log.write_text(SAMPLE_LOG)
    assert main([str(log), "--rank-size", "8", "--mode", mode, "--batch-size", "8", "--e2e-seconds", "1234",
                 "--device", "npu"]) == 0
    printed = capsys.readouterr().out
    assert "Final Performance images/sec : 5524.7\n" in printed
    assert "E2E Training Duration sec : 1234\n" in printed
    assert ("Final Train best wer : 9.87\n" in printed) == (mode == "acc")
    written = (tmp_path / f"wav2vec2_bs8_8p_{mode}.log").read_text()
    entries = dict(line.split(" = ", 1) for line in written.splitlines())
    assert entries["CaseName"] == f"wav2vec2_bs8_8p_{mode}"
    assert (entries["Network"], entries["RankSize"], entries["BatchSize"]) == ("wav2vec2", "8", "8")
    assert (entries["ActualFPS"], entries["ActualLoss"], entries["E2ETrainingTime"]) == ("5524.7", "379.9", "1234")
    assert entries["TrainingTime"] == "487.80"
    assert entries.get("TrainAccuracy") == ("9.87" if mode == "acc" else None)
    assert all(f"{key} = " in printed for key in entries)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_summary_of_a_missing_log_fails(tmp_path, capsys):
    assert main([str(tmp_path / "train_0.log"), "--rank-size", "1", "--mode", "perf"]) == 2
    assert "train_0.log does not exist" in capsys.readouterr().err


def test_case_name_without_a_batch_size():
    assert case_name("wav2vec2_demo", 2, "acc", None) == "wav2vec2_demo_2p_acc"


# ---- the scripts ------------------------------------------------------------------------------

@pytest.fixture
def checkout(tmp_path) -> Path:
    """The launch scripts in a folder of their own (test/output/ is written beside them)."""
    shutil.copytree(SCRIPTS, tmp_path / "repo" / "test", ignore=shutil.ignore_patterns("output", "*.md"))
    return tmp_path / "repo"


def run_script(checkout: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    for key in ("W2V2_DEVICE", "W2V2_MATMUL_PRECISION"):
        env.pop(key, None)
    return subprocess.run(["bash", str(checkout / "test" / name), *args], capture_output=True, text=True,
                          env=env, cwd=checkout.parent, timeout=900)


@NEEDS_SHELL
@pytest.mark.parametrize("args, message", [
    (["--fp32", "--hf32"], "--fp32 and --hf32 exclude each other"),
    (["--hf32", "--device_id=1", "--fp32"], "--fp32 and --hf32 exclude each other"),
    (["--batch_size=8"], "unknown argument '--batch_size=8'"),
    (["extra"], "unexpected argument 'extra'"),
    (["--device=tpu"], "--device must be cpu, cuda or npu, but is 'tpu'"),
    (["--device_id=x"], "--device_id must be a device number"),
    (["--device_id"], "--device_id needs a value"),
])
def test_bad_arguments_fail_before_anything_runs(checkout, args, message):
    done = run_script(checkout, "train_performance_1p.sh", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (checkout / "test" / "output").exists()


@NEEDS_SHELL
def test_a_data_path_without_the_pretrained_model_fails(checkout, tmp_path):
    done = run_script(checkout, "train_full_8p.sh", f"--data_path={tmp_path}")
    assert done.returncode == 2
    assert f"{tmp_path}/wav2vec_small.pt is missing" in done.stderr


@pytest.fixture
def librispeech(tmp_path) -> Path:
    """A tiny LibriSpeech-like folder with no manifest yet, and a small random `wav2vec_small.pt`."""
    data = tmp_path / "LibriSpeech"
    shutil.rmtree(write_corpus(data))
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict({
        "conv_feature_layers": "[(32,10,5)]+[(32,3,2)]*4+[(32,2,2)]*2", "encoder_layers": 1,
        "encoder_embed_dim": 128, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2, "final_dim": 32,
        "latent_vars": 8, "conv_pos": 16, "conv_pos_groups": 4}))
    save_checkpoint(data / "wav2vec_small.pt", model)
    return data


def summary_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.split("------------------ Final result ------------------\n", 1)[1].splitlines()
    return dict(line.split(" : ", 1) for line in lines if " : " in line)


@NEEDS_SHELL
@pytest.mark.parametrize("script, mode", [("train_performance_1p.sh", "perf"), ("train_full_1p.sh", "acc")])
def test_base_100h_on_one_device(checkout, librispeech, script, mode):
    done = run_script(checkout, script, f"--data_path={librispeech}", "--device_id=3", "--device=cpu", "--fp32",
                      "optimization.max_update=2", "optimization.update_freq=[1]", "dataset.num_workers=0")
    result = summary_of(done)
    out = checkout / "test" / "output" / "3"
    assert (librispeech / "manifest" / "dict.ltr.txt").is_file()
    assert "common.fp16=false" in done.stdout and "dataset.batch_size=8" in done.stdout
    assert ("dataset.disable_validation=true" in done.stdout) == (mode == "perf")
    fps, wer = users_awk(out / "train_3.log")
    assert result["Final Performance images/sec"] == fps and float(fps) > 0
    assert float(result["E2E Training Duration sec"]) >= 0
    entries = dict(line.split(" = ", 1) for line in (out / f"wav2vec2_bs8_1p_{mode}.log").read_text().splitlines())
    assert (entries["ActualFPS"], entries["RankSize"], entries["Device"]) == (fps, "1", "cpu")
    if mode == "acc":
        assert result["Final Train best wer"] == wer == entries["TrainAccuracy"]
        assert 0 <= float(wer)
    else:
        assert "Final Train best wer" not in result and wer == ""
    assert (out / "log.jsonl").is_file()


@pytest.fixture
def demo_checkout(checkout) -> Path:
    """The scripts beside a tiny stand-in for examples/demo_corpus (no manifest inside it)."""
    shutil.rmtree(write_corpus(checkout / "examples" / "demo_corpus"))
    return checkout


@pytest.mark.slow
@NEEDS_SHELL
def test_demo_performance_8p_and_full_1p(demo_checkout):
    done = run_script(demo_checkout, "train_performance_8p.sh", "--device=cpu", "--pretrain_updates=2",
                      "optimization.max_update=2")
    result = summary_of(done)
    output = demo_checkout / "test" / "output"
    assert "runs 2 processes on the CPU" in done.stdout
    pretrained = output / "demo_pretrain" / "updates_2"
    assert (pretrained / "checkpoints" / "checkpoint_last.pt").is_file()
    assert not (demo_checkout / "examples" / "demo_corpus" / "manifest").exists()
    summary = (output / "0" / "wav2vec2_demo_2p_perf.log").read_text()
    entries = dict(line.split(" = ", 1) for line in summary.splitlines())
    assert entries["RankSize"] == "2" and entries["ActualFPS"] == result["Final Performance images/sec"]

    shutil.copytree(pretrained, output / "demo_pretrain" / "recipe")  # stands in for the recipe's long pretraining
    done = run_script(demo_checkout, "train_full_1p.sh", "--device=cpu", "--device_id=1", "optimization.max_update=2")
    result = summary_of(done)
    recipe_model = output / "demo_pretrain" / "recipe" / "checkpoints" / "checkpoint_last.pt"
    assert f"using the demo's pretrained model {recipe_model}" in done.stdout
    assert result["Final Train best wer"] == users_awk(output / "1" / "train_1.log")[1] != ""
