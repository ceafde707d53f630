"""`fairseq-hydra-train` end to end on a tiny corpus: pretraining, fine-tuning, errors, two processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from w2v2 import devices
from w2v2.cli import hydra_train
from w2v2.cli.hydra_train import main
from w2v2.interop.safe_load import load_checkpoint_file
from tests.corpus import FIXTURE_CONFIGS


def test_missing_required_value_names_the_key(capsys):
    assert main(["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_ctc", "task.data=/x"]) == 2
    assert "`model.w2v_path`" in capsys.readouterr().err


def test_misspelled_override_names_the_key(tiny_manifest, capsys):
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}",
            "optimization.max_updates=3"]
    assert main(args) == 2
    assert "optimization.max_update" in capsys.readouterr().err


def test_pretrain_then_finetune_through_the_fairseq_command(tiny_manifest, tmp_path):
    pretrain = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}",
                f"hydra.run.dir={tmp_path / 'pt'}", "optimization.max_update=4", "checkpoint.save_interval_updates=2"]
    assert main(pretrain) == 0
    pretrained = tmp_path / "pt" / "checkpoints" / "checkpoint_last.pt"
    assert load_checkpoint_file(pretrained)["optimizer_history"][-1]["num_updates"] == 4
    finetune = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_ctc", f"task.data={tiny_manifest}",
                f"model.w2v_path={pretrained}", f"hydra.run.dir={tmp_path / 'ft'}", "optimization.max_update=6",
                "dataset.validate_interval_updates=3"]
    assert main(finetune) == 0
    saved = load_checkpoint_file(tmp_path / "ft" / "checkpoints" / "checkpoint_best.pt")
    assert saved["cfg"]["model"]["_name"] == "wav2vec_ctc"
    assert saved["cfg"]["model"]["w2v_args"]["model"]["_name"] == "wav2vec2"
    assert saved["task_state"]["target_dictionary"].symbols[4] == "|"
    log = (tmp_path / "ft" / "hydra_train.log").read_text()
    valid_lines = [line for line in log.splitlines() if "[valid]" in line]
    assert valid_lines and list(json.loads(valid_lines[-1].split(" - ", 1)[1]))[-1] == "valid_best_wer"
    train_lines = [json.loads(line.split(" - ", 1)[1]) for line in log.splitlines() if "[train]" in line]
    assert float(train_lines[-1]["train_wps"]) > 0
    records = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert {r["tag"] for r in records} >= {"train_inner", "train", "valid"}


@pytest.mark.slow
def test_bundled_recipes_and_two_spawned_processes(tiny_manifest, tmp_path):
    command = [sys.executable, "-m", "w2v2.cli.hydra_train", "--config-name", "demo_pretrain",
               f"task.data={tiny_manifest}", f"hydra.run.dir={tmp_path / 'pt'}", "optimization.max_update=4",
               "distributed_training.distributed_world_size=2", "dataset.num_workers=0",
               "checkpoint.save_interval_updates=4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint_file(tmp_path / "pt" / "checkpoints" / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 4
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2


def test_tensorboard_events_are_written(tiny_manifest, tmp_path):
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}",
            f"hydra.run.dir={tmp_path}", "optimization.max_update=2", f"common.tensorboard_logdir={tmp_path / 'tb'}",
            "checkpoint.no_save=true"]
    assert main(args) == 0
    assert list((tmp_path / "tb" / "train_inner").glob("events.out.tfevents.*"))
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_log_file_gets_the_messages_and_empty_cache_freq_frees_the_cache(tiny_manifest, tmp_path, monkeypatch):
    emptied = []
    monkeypatch.setattr(devices, "empty_cache", lambda device: emptied.append(device.type))
    monkeypatch.chdir(tmp_path)  # a relative log_file is taken from where the command runs, like task.data
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}",
            "hydra.run.dir=run", "optimization.max_update=3", "common.log_file=copy.log",
            "common.empty_cache_freq=2", "checkpoint.no_save=true"]
    assert main(args) == 0
    assert emptied == ["cpu", "cpu"]  # after updates 1 and 3
    # fairseq's FileHandler writes each message alone, without the time, logger and level of the console.
    copied = (tmp_path / "copy.log").read_text().splitlines()
    console = (tmp_path / "run" / "hydra_train.log").read_text().splitlines()
    assert copied == [re.sub(r"^\[[^\]]*\]\[[^\]]+\]\[[A-Z]+\] - ", "", line) for line in console] != console
    assert [json.loads(line).get("num_updates") for line in copied if line.startswith("{")][:3] == ["1", "2", "3"]
    assert any(line.startswith("done training in") for line in copied)
def test_distributed_world_size_starts_that_many_processes(tiny_manifest, monkeypatch):
    started = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(hydra_train, "spawn", lambda argv, cwd, nprocs: started.append(nprocs))
    monkeypatch.setattr(hydra_train, "run_worker", lambda argv, cwd: started.append("this process"))
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}"]
    assert main([*args, "distributed_training.distributed_world_size=3"]) == 0
    assert main(args) == 0  # 1 in the YAML
    assert started == [3, "this process"]


def test_a_torchrun_world_size_other_than_distributed_world_size_is_refused(tiny_manifest, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(hydra_train, "run_worker", lambda argv, cwd: started.append(argv[-1]))
    args = ["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main([*args, "distributed_training.distributed_world_size=2"]) == 2
    error = capsys.readouterr().err
    assert "WORLD_SIZE=4" in error and "`distributed_training.distributed_world_size` is 2" in error
    assert main([*args, "distributed_training.distributed_world_size=4"]) == 0
    assert started == ["distributed_training.distributed_world_size=4"]  # torchrun's process, no spawning


LAUNCH_OUTCOMES = {  # rank -> (exit code, its message or None) => exit status, what stderr says
    "a killed rank after a survivor's message": (
        {0: (1, "rank 0: an exchange failed"), 1: (-9, None)}, 1,
        ["rank 0 of 2: rank 0: an exchange failed", "(pid 1001) was killed by SIGKILL"]),
    "a hung rank: only the survivor failed": ({0: (1, "rank 0: an exchange failed")}, 1, ["rank 0 of 2: rank 0: an"]),
    "bad input on every rank": ({0: (2, "corrupt.wav"), 1: (2, "corrupt.wav")}, 2,
                                ["rank 0 of 2: corrupt.wav (rank 1 stopped too)"]),
    "a rank that crashed without a message": ({1: (1, None)}, 1, ["rank 1 (pid 1001) exited with status 1"]),
    "a signal both ranks saved on": ({0: (143, None), 1: (143, None)}, 143, []),
}


@pytest.mark.parametrize("case", LAUNCH_OUTCOMES)
def test_a_failed_launch_exits_with_the_status_of_its_fault(case, monkeypatch, capsys, tmp_path):
    """`spawn`'s reading of torchrun's ChildFailedError: a rank's W2v2Error keeps its status (2 for input,
    1 for a lost peer), and a killed or crashed rank is named with exit 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    ranks, status, said = LAUNCH_OUTCOMES[case]

    def launch(config, entry):
        def launched(argv, cwd, error_dir):
            for rank, (_, message) in ranks.items():
                if message is not None:
                    Path(error_dir, f"rank{rank}.txt").write_text(message, encoding="utf-8")
            failures = {rank: ProcessFailure(rank, 1000 + rank, code, str(tmp_path / "none.json"))
                        for rank, (code, _) in ranks.items()}
            raise ChildFailedError("spawned_worker", failures)
        return launched

    monkeypatch.setattr("torch.distributed.launcher.api.elastic_launch", launch)
    two = SimpleNamespace(cfg=SimpleNamespace(distributed_training=SimpleNamespace(distributed_world_size=2)))
    monkeypatch.setattr(hydra_train, "load", lambda args, cwd: two)
    with pytest.raises(SystemExit) as stopped:
        sys.exit(main(["--config-name", "any"]))
    assert stopped.value.code == status
    error = capsys.readouterr().err
    assert all(part in error for part in said), error
    assert ("error:" in error) == bool(said) and "Traceback" not in error

