"""The hostile-input catalogue: every case must end in one paragraph naming what is wrong, a non-zero exit,
no traceback (unless `--debug` / `W2V2_DEBUG=1`) and no output left half-written.

Each case builds its command from the `World` of broken files (`hostile_world.py`) and names the text the
error must contain. The commands run in this process, as `w2v2 ...` and `fairseq-hydra-train ...` would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, NamedTuple, Tuple

import pytest
import torch

from tests.cli.hostile_world import World, first_entry, write_audio, write_checkpoints
from w2v2.cli import hydra_train
from w2v2.cli import main as w2v2_main

ERROR_LINE = re.compile(r"(?:w2v2 [a-z]+|w2v2-hydra-train): error: (.*)")


class Case(NamedTuple):
    """A hostile input: the command (`w2v2` or `hydra`), how to build it, what its error must name."""

    name: str
    program: str
    build: Callable[[World], Tuple[List[str], str]]


def w2v2(name: str, build: Callable[[World], Tuple[List[str], str]]) -> Case:
    return Case(name, "w2v2", build)


def hydra(name: str, build: Callable[[World], Tuple[List[str], str]]) -> Case:
    return Case(name, "hydra", build)


def lines_of(text: str) -> Callable[[str], str]:
    return lambda _: text


CASES = [
    # ---- command-line arguments ------------------------------------------------------------------------
    w2v2("window-nan", lambda w: (w.transcribe("--window-seconds", "nan"), "--window-seconds")),
    w2v2("window-inf", lambda w: (w.transcribe("--window-seconds", "inf"), "--window-seconds")),
    w2v2("overlap-nan", lambda w: (w.transcribe("--overlap-seconds", "nan"), "--overlap-seconds")),
    w2v2("window-tiny", lambda w: (w.transcribe("--window-seconds", "0.01"), "--window-seconds")),
    w2v2("overlap-negative", lambda w: (w.transcribe("--overlap-seconds", "-1"), "--overlap-seconds")),
    w2v2("device-unknown", lambda w: (w.transcribe("--device", "tpu"), "'tpu'")),
    w2v2("layer-too-high", lambda w: (w.features("--layer", "99"), "--layer")),
    w2v2("layer-negative", lambda w: (w.features("--layer", "-1"), "--layer")),
    w2v2("features-same-stem", lambda w: (w.features(audio=[w.audio["ok"], w.audio["ok"]]), "share a file name")),
    w2v2("features-output-under-file", lambda w: (
        ["features", "--checkpoint", w.ctc, str(w.audio["ok"]), "--output-dir", str(w.audio["ok"] / "x")],
        "--output-dir")),
    w2v2("evaluate-no-subset", lambda w: (w.evaluate(subset="test_other"), "test_other")),
    w2v2("evaluate-data-not-folder", lambda w: (w.evaluate(data=w.audio["ok"]), str(w.audio["ok"]))),
    w2v2("max-tokens-zero", lambda w: (w.evaluate("--max-tokens", "0"), "--max-tokens")),
    w2v2("batch-size-negative", lambda w: (w.evaluate("--batch-size", "-3"), "--batch-size")),
    w2v2("per-utterance-and-max-tokens", lambda w: (w.evaluate("--per-utterance", "--max-tokens", "9"), "--max-tokens")),
    w2v2("lm-without-lexicon", lambda w: (w.evaluate("--lm-path", str(w.audio["ok"])), "--lexicon")),
    w2v2("beam-zero", lambda w: (w.evaluate("--lm-path", "x.arpa", "--lexicon", "x.lst", "--beam", "0"), "--beam")),
    w2v2("fp16-on-cpu", lambda w: (w.evaluate("--precision", "fp16"), "--precision fp16")),
    w2v2("max-tokens-below-longest", lambda w: (w.evaluate("--max-tokens", "1000"), "--max-tokens")),
    w2v2("results-path-under-file", lambda w: (w.evaluate("--results-path", str(w.audio["ok"] / "r")), "--results-path")),
    # ---- audio ---------------------------------------------------------------------------------------------
    w2v2("transcribe-missing-file", lambda w: (w.transcribe(audio=[w.tmp / "gone.wav"]), "gone.wav")),
    w2v2("transcribe-folder", lambda w: (w.transcribe(audio=[w.audio["dir"]]), "dir.wav")),
    w2v2("transcribe-corrupt", lambda w: (w.transcribe(audio=[w.audio["corrupt"]]), "corrupt.wav")),
    w2v2("transcribe-empty", lambda w: (w.transcribe(audio=[w.audio["empty"]]), "empty.wav")),
    w2v2("transcribe-short", lambda w: (w.transcribe(audio=[w.audio["short"]]), "short.wav")),
    w2v2("transcribe-nan", lambda w: (w.transcribe(audio=[w.audio["nan"]]), "nan.wav")),
    w2v2("transcribe-inf", lambda w: (w.transcribe(audio=[w.audio["inf"]]), "inf.wav")),
    w2v2("features-short", lambda w: (w.features(audio=[w.audio["ok"], w.audio["short"]]), "short.wav")),
    w2v2("features-nan", lambda w: (w.features(audio=[w.audio["nan"]]), "nan.wav")),
    w2v2("features-8khz", lambda w: (w.features(audio=[w.audio["rate8k"]]), "rate8k.wav")),
    w2v2("features-empty", lambda w: (w.features(audio=[w.audio["empty"]]), "empty.wav")),
    w2v2("features-corrupt", lambda w: (w.features(audio=[w.audio["corrupt"]]), "corrupt.wav")),
    w2v2("features-missing", lambda w: (w.features(audio=[w.tmp / "gone.flac"]), "gone.flac")),
    w2v2("evaluate-nan-audio", lambda w: (w.evaluate(data=w.one_file(w.audio["nan"])), "nan.wav")),
    w2v2("evaluate-corrupt-audio", lambda w: (w.evaluate(data=w.one_file(w.audio["corrupt"], 16000)), "corrupt.wav")),
    w2v2("evaluate-8khz-audio", lambda w: (w.evaluate(data=w.one_file(w.audio["rate8k"])), "rate8k.wav")),
    w2v2("evaluate-frames-changed", lambda w: (w.evaluate(data=w.one_file(w.audio["ok"], 15000)), "ok.wav")),
    # ---- checkpoints -----------------------------------------------------------------------------------
    *[w2v2(f"checkpoint-{kind}", lambda w, kind=kind: (w.transcribe(checkpoint=w.checkpoints[kind]), f"{kind}.pt"))
      for kind in ("truncated", "empty", "text", "evil_zip", "model_list", "model_values", "no_model", "no_cfg",
                   "wrong_name", "missing_key", "wrong_shape", "nan_weights", "no_dictionary")],
    w2v2("checkpoint-evil-plain-pickle", lambda w: (w.features(checkpoint=w.checkpoints["evil_pickle"]), "evil_pickle.pt")),
    w2v2("checkpoint-folder", lambda w: (w.transcribe(checkpoint=w.checkpoints["folder"]), "model_folder")),
    w2v2("checkpoint-missing", lambda w: (w.transcribe(checkpoint=w.tmp / "nope.pt"), "nope.pt")),
    w2v2("checkpoint-pretrained-only", lambda w: (w.transcribe(checkpoint=w.pretrained), "pretrain_init.pt")),
    w2v2("evaluate-nan-weights", lambda w: (w.evaluate(checkpoint=w.checkpoints["nan_weights"]), "nan_weights.pt")),
    # ---- manifests -------------------------------------------------------------------------------------
    w2v2("manifest-root-only", lambda w: (w.evaluate(data=w.data({"valid.tsv": lambda t: t.splitlines()[0] + "\n",
                                                                   "valid.ltr": ""})), "valid.tsv")),
    w2v2("manifest-empty-file", lambda w: (w.evaluate(data=w.data({"valid.tsv": ""})), "valid.tsv")),
    w2v2("manifest-escapes-root", lambda w: (w.evaluate(data=w.data({"valid.tsv": first_entry(lambda l: "../../" + l)})),
                                             "valid.tsv, line 2")),
    w2v2("manifest-absolute-path", lambda w: (w.evaluate(data=w.data({"valid.tsv": first_entry(lambda l: "/etc/" + l)})),
                                              "valid.tsv, line 2")),
    w2v2("manifest-no-tab", lambda w: (w.evaluate(data=w.data({"valid.tsv": first_entry(lambda l: l.replace("\t", " "))})),
                                       "valid.tsv, line 2")),
    w2v2("manifest-frames-not-number", lambda w: (w.evaluate(data=w.data({"valid.tsv": first_entry(lambda l: l + "x")})),
                                                  "valid.tsv, line 2")),
    w2v2("manifest-root-missing", lambda w: (w.evaluate(data=w.data({"valid.tsv": lambda t: "/no/such/root\n" +
                                                                     t.split("\n", 1)[1]})), "valid.tsv, line 1")),
    w2v2("manifest-not-utf8", lambda w: (w.evaluate(data=w.data({"valid.tsv": b"\xff\xfe\x00bad"})), "valid.tsv")),
    w2v2("manifest-missing-audio", lambda w: (w.evaluate(data=w.data({"valid.tsv": first_entry(lambda l: "x" + l)})),
                                              ".flac")),
    # ---- labels and dictionaries ----------------------------------------------------------------------
    w2v2("labels-empty-line", lambda w: (w.evaluate(data=w.data({"valid.ltr": lambda t: "\n" + t.split("\n", 1)[1]})),
                                         "valid.ltr, line 1")),
    w2v2("labels-blank-line", lambda w: (w.evaluate(data=w.data({"valid.ltr": lambda t: t.replace("\n", "\n  \n", 1)
                                                                 .rsplit("\n", 2)[0] + "\n"})), "valid.ltr, line 2")),
    w2v2("labels-too-few", lambda w: (w.evaluate(data=w.data({"valid.ltr": lambda t: t.split("\n", 1)[1]})), "valid.ltr")),
    w2v2("labels-missing", lambda w: (w.evaluate(data=w.data({"valid.ltr": None})), "valid.ltr")),
    w2v2("labels-not-utf8", lambda w: (w.evaluate(data=w.data({"valid.ltr": b"\xff\xfe"})), "valid.ltr")),
    w2v2("dictionary-missing-for-bare-checkpoint", lambda w: (
        w.evaluate(data=w.data({"dict.ltr.txt": None}), checkpoint=w.checkpoints["no_dictionary"]), "dict.ltr.txt")),
    w2v2("dictionary-empty-for-bare-checkpoint", lambda w: (
        w.evaluate(data=w.data({"dict.ltr.txt": ""}), checkpoint=w.checkpoints["no_dictionary"]), "dict.ltr.txt")),
    hydra("dictionary-empty", lambda w: (w.hydra("tiny_ctc", data=w.data({"dict.ltr.txt": ""})), "dict.ltr.txt")),
    hydra("dictionary-bad-line", lambda w: (w.hydra("tiny_ctc", data=w.data({"dict.ltr.txt": "A 3\nB three\n"})),
                                            "dict.ltr.txt, line 2")),
    hydra("dictionary-duplicate", lambda w: (w.hydra("tiny_ctc", data=w.data({"dict.ltr.txt": "A 3\nA 2\n"})),
                                             "dict.ltr.txt, line 2")),
    hydra("dictionary-missing", lambda w: (w.hydra("tiny_ctc", data=w.data({"dict.ltr.txt": None})), "dict.ltr.txt")),
    hydra("dictionary-not-utf8", lambda w: (w.hydra("tiny_ctc", data=w.data({"dict.ltr.txt": b"\xff 1\n"})),
                                            "dict.ltr.txt")),
    hydra("train-labels-empty-line", lambda w: (w.hydra("tiny_ctc", data=w.data({"train.ltr": lambda t: "\n" +
                                                                                 t.split("\n", 1)[1]})), "train.ltr")),
    hydra("train-manifest-escapes", lambda w: (w.hydra("tiny_ctc", data=w.data({"train.tsv": first_entry(
        lambda l: "../" + l)})), "train.tsv, line 2")),
    hydra("train-manifest-missing", lambda w: (w.hydra("tiny_ctc", data=w.data({"train.tsv": None})), "train.tsv")),
    # ---- configs -------------------------------------------------------------------------------------------
    hydra("mask-prob-above-one", lambda w: (w.hydra("tiny_ctc", "model.mask_prob=1.5"), "model.mask_prob")),
    hydra("mask-channel-prob-negative", lambda w: (w.hydra("tiny_ctc", "model.mask_channel_prob=-0.1"),
                                                   "model.mask_channel_prob")),
    hydra("dropout-above-one", lambda w: (w.hydra("tiny_pretrain", "model.dropout_input=2"), "model.dropout_input")),
    hydra("layerdrop-above-one", lambda w: (w.hydra("tiny_ctc", "model.layerdrop=1.01"), "model.layerdrop")),
    hydra("mask-length-zero", lambda w: (w.hydra("tiny_pretrain", "+model.mask_length=0"), "model.mask_length")),
    hydra("finetune-max-sample-size", lambda w: (w.hydra("tiny_ctc", "+task.max_sample_size=16000"),
                                                 "task.max_sample_size")),
    hydra("pretrain-max-sample-size-zero", lambda w: (w.hydra("tiny_pretrain", "task.max_sample_size=0"),
                                                      "task.max_sample_size")),
    hydra("misspelled-key", lambda w: (w.hydra("tiny_pretrain", "optimization.max_updates=3"), "optimization.max_update")),
    hydra("unknown-group", lambda w: (w.hydra("tiny_pretrain", "trainer.lr=3"), "trainer")),
    hydra("negative-workers", lambda w: (w.hydra("tiny_pretrain", "dataset.num_workers=-1"), "dataset.num_workers")),
    hydra("override-syntax", lambda w: (w.hydra("tiny_pretrain", "model.dropout=[0.1"), "model.dropout=[0.1")),
    hydra("no-batch-limit", lambda w: (w.hydra("tiny_pretrain", "dataset.max_tokens=null"), "dataset.max_tokens")),
    hydra("wrong-type", lambda w: (w.hydra("tiny_pretrain", "optimization.max_update=lots"), "optimization.max_update")),
    hydra("fully-sharded", lambda w: (w.hydra("tiny_pretrain", "distributed_training.ddp_backend=fully_sharded"),
                                      "distributed_training.ddp_backend")),
    hydra("required-value-missing", lambda w: (["--config-dir", str(w.hydra_dir), "--config-name", "tiny_ctc"],
                                               "task.data")),
    hydra("config-dir-missing", lambda w: (["--config-dir", str(w.tmp / "nope"), "--config-name", "x"], "nope")),
    hydra("config-name-missing", lambda w: (["--config-dir", str(w.tmp), "--config-name", "absent"], "absent")),
    hydra("yaml-invalid", lambda w: (w.yaml("model: [unclosed\n"), "bad.yaml")),
    hydra("yaml-a-list", lambda w: (w.yaml("- 1\n- 2\n"), "bad.yaml")),
    hydra("task-data-not-folder", lambda w: (w.hydra("tiny_pretrain", data=w.tmp / "none"), "task.data")),
    hydra("w2v-path-missing", lambda w: (w.hydra("tiny_ctc", f"model.w2v_path={w.tmp / 'gone.pt'}"), "gone.pt")),
    hydra("w2v-path-not-checkpoint", lambda w: (w.hydra("tiny_ctc", f"model.w2v_path={w.checkpoints['text']}"),
                                                "text.pt")),
    hydra("run-dir-under-file", lambda w: (w.hydra("tiny_pretrain", f"hydra.run.dir={w.audio['ok']}/run"),
                                           "hydra.run.dir")),
    hydra("log-file-unwritable", lambda w: (w.hydra("tiny_pretrain", f"common.log_file={w.audio['ok']}/log"),
                                            "common.log_file")),
    hydra("worker-reads-bad-audio", lambda w: (w.hydra("tiny_pretrain", "dataset.num_workers=1",
                                                       "dataset.disable_validation=true", data=w.bad_train_audio()),
                                               "corrupt.wav")),
]


@pytest.fixture(scope="module")
def world(tiny_manifest, tmp_path_factory) -> World:
    shared = tmp_path_factory.mktemp("hostile")
    (shared / "checkpoints").mkdir()
    (shared / "audio").mkdir()
    return World(tiny_manifest, write_checkpoints(shared / "checkpoints"), write_audio(shared / "audio"))


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    """Training with data workers sets torch's thread count and OMP_NUM_THREADS for the whole process
    (`w2v2.data.loader.limit_threads`); later tests must not inherit them."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_command(program: str, argv: List[str], capsys) -> Tuple[int, str]:
    """Exit status and stderr of a command run in this process."""
    code = (w2v2_main.main if program == "w2v2" else hydra_train.main)(argv)
    return code, capsys.readouterr().err


def error_paragraph(stderr: str) -> str:
    """The one error message of `stderr`, which must be its last line (progress bars use `\\r`)."""
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip()]
    found = [match.group(1) for line in lines for match in [ERROR_LINE.search(line)] if match]
    assert len(found) == 1, stderr[-3000:]
    assert ERROR_LINE.search(lines[-1]), f"output after the error: {lines[-1]!r}"
    return found[0]


def leftovers(folder: Path) -> List[str]:
    """Temporary files left by an interrupted write (`w2v2.fileio.temp_path`)."""
    return [str(path) for path in folder.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gives_one_paragraph(case: Case, world: World, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("W2V2_DEBUG", raising=False)
    world.tmp = tmp_path
    argv, named = case.build(world)
    code, stderr = run_command(case.program, argv, capsys)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    message = error_paragraph(stderr)
    assert named in message
    assert "weights_only=False" not in message and "DataLoader worker" not in message
    assert not leftovers(tmp_path) and not (world.out.exists() and any(world.out.iterdir()))


def test_catalogue_size():
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("switch", ["--debug", "W2V2_DEBUG"])
def test_debug_shows_the_traceback(switch: str, world: World, tmp_path: Path, capsys, monkeypatch):
    world.tmp = tmp_path
    if switch == "W2V2_DEBUG":
        monkeypatch.setenv("W2V2_DEBUG", "1")
    debug = ["--debug"] if switch == "--debug" else []
    for program, argv in (("w2v2", debug + world.transcribe(audio=[world.audio["short"]])),
                          ("hydra", world.hydra("tiny_ctc", "model.mask_prob=1.5") + debug)):
        code, stderr = run_command(program, argv, capsys)
        assert code == 2 and "Traceback (most recent call last)" in stderr
        assert "short.wav" in error_paragraph(stderr) or "mask_prob" in error_paragraph(stderr)


@pytest.mark.slow
def test_rank_error_is_one_paragraph(world: World, tmp_path: Path):
    world.tmp = tmp_path
    argv = world.hydra("tiny_pretrain", "distributed_training.distributed_world_size=2",
                       "dataset.disable_validation=true", data=world.bad_train_audio(copies=2))
    done = subprocess.run([sys.executable, "-m", "w2v2.cli.hydra_train", *argv], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    message = error_paragraph(done.stderr)
    assert message.startswith("rank ") and "of 2: " in message and "corrupt.wav" in message
