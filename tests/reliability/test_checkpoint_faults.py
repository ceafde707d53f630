"""Kills between the files of one save, damaged checkpoints, stale temporary files and a full disk."""

from __future__ import annotations

import errno
import io
import logging
import os
import re

import pytest
import torch

from w2v2 import fileio
from w2v2.errors import W2v2Error
from w2v2.train import checkpointing, loop
from w2v2.train.trainer import Trainer
from tests.reliability.faults import records, same_weights, updates_of
from tests.train.tiny_configs import pretraining

KEYS = ("checkpoint.save_interval_updates=3", "checkpoint.keep_interval_updates=-1", "common.log_interval=1",
        "common.seed=3")


class Killed(Exception):
    pass


@pytest.fixture
def one_thread():
    """One thread, so two runs of the same updates are bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tiny_manifest, tmp_path_factory):
    """checkpoint_last.pt of an uninterrupted 12-update run (one thread), shared by the tests of this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("uninterrupted")
    loop.train(pretraining(tiny_manifest, "optimization.max_update=12", *KEYS), run)
    torch.set_num_threads(threads)
    return run / "checkpoints" / "checkpoint_last.pt"


def test_kill_between_interval_and_last_checkpoint_resumes_from_the_interval_one(
        tiny_manifest, tmp_path, monkeypatch, caplog, uninterrupted, one_thread):
    copy = checkpointing.shutil.copyfileobj

    def killed_copying_update_9(source, target):
        if os.path.basename(target.name).startswith(".checkpoint_last.pt") and source.name.endswith("_9.pt"):
            raise Killed  # the process dies after checkpoint_1_9.pt, before checkpoint_last.pt
        copy(source, target)

    monkeypatch.setattr(checkpointing.shutil, "copyfileobj", killed_copying_update_9)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        loop.train(pretraining(tiny_manifest, "optimization.max_update=12", *KEYS), run)
    monkeypatch.setattr(checkpointing.shutil, "copyfileobj", copy)
    saved = run / "checkpoints"
    ninth = next(saved.glob("checkpoint_*_9.pt"))
    assert updates_of(saved / "checkpoint_last.pt") == 6 and updates_of(ninth) == 9
    with caplog.at_level(logging.INFO):
        assert loop.train(pretraining(tiny_manifest, "optimization.max_update=12", *KEYS), run).num_updates == 12
    assert any("resuming from" in r.getMessage() and ninth.name in r.getMessage()
               and "newer than checkpoint_last.pt: a save was cut short" in r.getMessage() for r in caplog.records)
    assert same_weights(uninterrupted, saved / "checkpoint_last.pt") is None
    inner = [r["num_updates"] for r in records(run) if r["tag"] == "train_inner"]
    assert inner == list(range(1, 13))  # updates 10 and 11, logged before the kill, are not there twice


def test_truncated_checkpoint_last_falls_back_to_an_intact_one(tiny_manifest, tmp_path, monkeypatch, caplog,
                                                               uninterrupted, one_thread):
    step = Trainer.train_step

    def killed_after_update_9(self, batches):
        if self.num_updates == 9:
            raise Killed
        return step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", killed_after_update_9)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        loop.train(pretraining(tiny_manifest, "optimization.max_update=12", *KEYS), run)
    monkeypatch.setattr(Trainer, "train_step", step)
    last = run / "checkpoints" / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with caplog.at_level(logging.INFO):
        assert loop.train(pretraining(tiny_manifest, "optimization.max_update=12", *KEYS), run).num_updates == 12
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"cannot resume from {last}") and "not a readable PyTorch checkpoint" in m
               for m in messages)
    assert any("resuming from" in m and "_9.pt" in m and "checkpoint_last.pt newer but unreadable" in m
               for m in messages)
    assert same_weights(uninterrupted, last) is None


def test_no_loadable_checkpoint_is_an_error_not_a_fresh_start(tiny_manifest, tmp_path):
    saved = tmp_path / "checkpoints"
    saved.mkdir()
    (saved / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(W2v2Error, match="no checkpoint in .* can be loaded .*checkpoint_last.pt"):
        loop.train(pretraining(tiny_manifest, "optimization.max_update=2"), tmp_path)


def test_stale_temporary_files_are_removed_but_a_live_writer_s_are_kept(tiny_manifest, tmp_path, caplog):
    saved = tmp_path / "checkpoints"
    saved.mkdir(parents=True)
    dead = saved / f".checkpoint_last.pt.{2**22 + 12345}.tmp"  # above any pid_max: no such process
    live = saved / f".checkpoint_last.pt.{os.getppid()}.tmp"
    for path in (dead, live, tmp_path / f".log.jsonl.{2**22 + 1}.tmp"):
        path.write_bytes(b"half a file")
    with caplog.at_level(logging.INFO):
        loop.train(pretraining(tiny_manifest, "optimization.max_update=1"), tmp_path)
    assert not dead.exists() and live.exists() and not (tmp_path / f".log.jsonl.{2**22 + 1}.tmp").exists()
    assert any("removed 1 temporary files left by interrupted writes" in r.getMessage() for r in caplog.records)
    assert fileio.remove_stale_temp_files(tmp_path / "missing") == []


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: writes past it fail with ENOSPC, as on a full disk."""

    room = 0

    def write(self, data) -> int:
        if self.tell() + len(data) > FullDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("room", [0, 20000])  # fails at once, or part-way through the zip writer's records
def test_full_disk_stops_with_one_paragraph_and_keeps_the_previous_files(tiny_manifest, tmp_path, monkeypatch, room):
    run = tmp_path / "run"
    loop.train(pretraining(tiny_manifest, "optimization.max_update=3", *KEYS), run)
    saved = run / "checkpoints"
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    real_open = open

    def open_on_full_disk(path, mode="r", **options):
        if str(path).endswith(".tmp") and "checkpoint" in str(path) and "b" in mode:
            FullDisk.room = room
            return FullDisk(path, "w")
        return real_open(path, mode, **options)

    monkeypatch.setattr(fileio, "open", open_on_full_disk, raising=False)
    with pytest.raises(W2v2Error) as error:
        loop.train(pretraining(tiny_manifest, "optimization.max_update=6", *KEYS), run)
    message = str(error.value)
    assert "\n" not in message and re.search(r"cannot write (checkpoint )?\S+checkpoint_\d+_6\.pt: ", message)
    assert ("No space left on device" in message or "MiB free" in message) and "training stopped" in message
    assert f"those already in {saved} are intact" in message
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before  # nothing changed, no temporary file left
