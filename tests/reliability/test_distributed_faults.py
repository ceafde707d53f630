"""Distributed faults in 2-process gloo runs: a rank killed or hung, a signal to the launcher, a new world size."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from w2v2.cli import hydra_train
from w2v2.errors import RunFault
from w2v2.train.checkpointing import world_size_position
from tests.reliability.faults import command, records, start, updates_of, wait_for_update

TWO = ("distributed_training.distributed_world_size=2", "optimization.max_update=500",
       "checkpoint.save_interval_updates=1000")


def saved_at(written_by: int, step: int) -> dict:
    return {"extra_state": {"train_iterator": {"epoch": 3, "iterations_in_epoch": step},
                            "w2v2": {"world_size": written_by}}}


def test_a_new_world_size_continues_at_the_same_share_of_the_epoch(caplog):
    with caplog.at_level(logging.WARNING):
        assert world_size_position(saved_at(2, 5), 2) == 5 and not caplog.records
        assert world_size_position(saved_at(2, 5), 1) == 10
        assert world_size_position(saved_at(1, 5), 2) == 2  # rounded down: a batch seen twice, none lost
        assert world_size_position(saved_at(4, 0), 1) == 0
    assert len(caplog.records) == 2 and "written by 2 processes, each at step 5" in caplog.records[0].getMessage()
    fairseq_file = {"extra_state": {"train_iterator": {"iterations_in_epoch": 6}},
                    "cfg": {"distributed_training": {"distributed_world_size": 3}}}
    assert world_size_position(fairseq_file, 1) == 18


def killed_rank_and_survivor(argv, cwd, error_dir):
    """A launched worker: rank 1 kills itself; rank 0 waits until it is gone, then fails as a survivor does."""
    pid_file = Path(error_dir, "victim.pid")
    if os.environ["RANK"] == "1":
        pid_file.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    while not pid_file.exists() or alive(int(pid_file.read_text())):
        time.sleep(0.01)

    def lost_peer(argv, cwd):
        raise RunFault("rank 0: an exchange with the other ranks failed")

    hydra_train.run_worker = lost_peer
    return hydra_train.spawned_worker(argv, cwd, error_dir)


def alive(pid: int) -> bool:
    """Whether `pid` runs: not gone and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_launcher_names_the_killed_rank_when_the_survivor_fails_right_after(monkeypatch, capsys):
    """torchrun's launcher reports one failed rank per look at its workers; both are gone by its next look
    unless the survivor waits, and then it named only the survivor (a CI failure)."""
    monkeypatch.setattr(hydra_train, "spawned_worker", killed_rank_and_survivor)
    with pytest.raises(SystemExit) as stopped:
        hydra_train.spawn(["--config-name", "any"], os.getcwd(), 2)
    error = capsys.readouterr().err
    # the survivor's own message comes first when it wrote it before the launcher stopped it
    assert stopped.value.code == 1 and error.rstrip().splitlines()[-1].endswith(
        "was killed by SIGKILL, so the launcher stopped the other ranks (any messages it wrote are above). Nothing "
        "was saved after the last checkpoint; run the same command again to resume from it."), error


def launched(manifest, run, *overrides):
    """A 2-process run and its workers' pids, once update 3 is logged."""
    process = start(command(manifest, run, *TWO, *overrides))
    wait_for_update(process, run, 3, limit_s=300)
    workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
    spawned = [int(pid) for pid in workers.stdout.split()]
    return process, spawned


@pytest.mark.slow
def test_sigterm_to_the_launcher_saves_once_and_a_single_process_resumes(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    process, _ = launched(tiny_manifest, run)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output[-3000:]
    last = run / "checkpoints" / "checkpoint_last.pt"
    stopped = [line for line in output.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and f"saved {last}" in stopped[0]
    saved = updates_of(last)
    single = start(command(tiny_manifest, run, f"optimization.max_update={saved + 4}",
                           "checkpoint.save_interval_updates=1000"))
    output, _ = single.communicate(timeout=300)
    assert single.returncode == 0, output[-3000:]
    assert "written by 2 processes" in output and updates_of(last) == saved + 4
    inner = [r["num_updates"] for r in records(run) if r["tag"] == "train_inner"]
    assert inner == list(range(1, saved + 5))  # no update logged twice across the two runs


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_a_dead_or_hung_rank_stops_the_run_within_a_bounded_time(tiny_manifest, tmp_path, fault):
    """Bounded by `heartbeat_timeout` (10 s here) plus torchrun's 30 s before it SIGKILLs a rank that does
    not stop; communicate's limit turns a hang into a failure."""
    run = tmp_path / "run"
    process, workers = launched(tiny_manifest, run, "distributed_training.heartbeat_timeout=10")
    victim = workers[-1]
    try:
        os.kill(victim, getattr(signal, fault))
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1, output[-3000:]
    assert "w2v2-hydra-train: error: rank" in output and "run the same command again to resume" in output
    if fault == "SIGKILL":
        assert f"(pid {victim}) was killed by SIGKILL" in output
    else:
        assert "did not answer within `distributed_training.heartbeat_timeout`" in output
