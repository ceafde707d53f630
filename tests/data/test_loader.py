import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from w2v2.data.datasets import FinetuningDataset, PretrainingDataset
from w2v2.data.dictionary import Dictionary
from w2v2.data.loader import build_dataloader, limit_threads
from w2v2.errors import W2v2Error

LENGTHS = [1200, 800, 1500, 900, 1000, 700, 1300]


@pytest.fixture()
def entries(tmp_path):
    rng = np.random.default_rng(1)
    for i, frames in enumerate(LENGTHS):
        soundfile.write(tmp_path / f"{i}.flac", rng.uniform(-0.5, 0.5, frames).astype(np.float32), 16000)
    return [(f"{i}.flac", frames) for i, frames in enumerate(LENGTHS)]


def _direct(dataset, sampler):
    """The batches one epoch gives without a DataLoader."""
    return [dataset.collater([dataset[key] for key in keys]) for keys in sampler]


def test_worker_batches_equal_direct_batches_across_epochs(tmp_path, entries):
    dataset = PretrainingDataset(tmp_path, entries, max_sample_size=1000, seed=4)
    sampler = dataset.batch_sampler(max_tokens=2500, num_replicas=2, rank=1)
    loader = build_dataloader(dataset, sampler, num_workers=2, persistent_workers=True)
    for epoch in (1, 2):
        # Persistent workers hold a copy of the dataset: the epoch must reach them through the keys.
        sampler.set_epoch(epoch)
        expected = _direct(dataset, sampler)
        loaded = list(loader)
        assert len(loaded) == len(expected) > 0
        for got, want in zip(loaded, expected):
            assert torch.equal(got["id"], want["id"])
            assert torch.equal(got["net_input"]["source"], want["net_input"]["source"])
            assert got["repeated"] == want["repeated"]


def test_finetuning_loader_in_process_resumes_mid_epoch(tmp_path, entries):
    dictionary = Dictionary(["|", "A"])
    dataset = FinetuningDataset(tmp_path, entries, ["A |"] * len(entries), dictionary)
    sampler = dataset.batch_sampler(max_tokens=3000, batch_size=2)
    loader = build_dataloader(dataset, sampler)
    full = [batch["id"].tolist() for batch in loader]
    sampler.set_epoch(1, start=2)
    assert [batch["id"].tolist() for batch in loader] == full[2:]
    assert sorted(i for ids in full for i in ids) == list(range(len(LENGTHS)))


def test_negative_workers_are_an_error(tmp_path, entries):
    dataset = PretrainingDataset(tmp_path, entries)
    with pytest.raises(W2v2Error, match="`num_workers` must be 0 or more, but is -1"):
        build_dataloader(dataset, dataset.batch_sampler(10**6), num_workers=-1)


def test_a_worker_error_keeps_its_own_message(tmp_path, entries):
    (tmp_path / "3.flac").write_bytes(b"not audio")
    dataset = PretrainingDataset(tmp_path, entries)
    with pytest.raises(W2v2Error, match="3.flac cannot be decoded") as direct:
        dataset[3]
    loader = build_dataloader(dataset, dataset.batch_sampler(10**6, shuffle=False), num_workers=1)
    with pytest.raises(W2v2Error) as from_worker:
        list(loader)
    assert str(from_worker.value) == str(direct.value)  # no "Caught W2v2Error in DataLoader worker", no traceback


@pytest.fixture()
def restore_threads(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_limit_threads_shares_the_cores(monkeypatch, restore_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert limit_threads(4) == 4 and torch.get_num_threads() == 4
    assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["MKL_NUM_THREADS"] == "4"


def test_limit_threads_keeps_a_preset_omp_value_and_at_least_one(monkeypatch, restore_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert limit_threads(8) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert limit_threads(1) == 3 and torch.get_num_threads() == 3
    with pytest.raises(W2v2Error, match="`num_local_processes` must be 1 or more"):
        limit_threads(0)


def test_limit_threads_leaves_cores_to_data_workers(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert limit_threads(1, reserved=1) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert limit_threads(2, reserved=4) == 1  # never fewer than one thread


EXIT_WITH_LIVE_WORKERS = """
import sys, time
import torch
from w2v2.data import loader
class Items(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i): return i
    def collater(self, items): return items
if sys.argv[1] == "starting":  # exit while the workers have not set their handlers yet
    handlers = loader._ignore_stop_signals
    loader._ignore_stop_signals = lambda worker_id: (time.sleep(1), handlers(worker_id))
batches = iter(loader.build_dataloader(Items(), [[0, 1], [2, 3]], num_workers=2))
if sys.argv[1] == "running":
    next(batches)
print("exiting")
"""


@pytest.mark.parametrize("workers", ["running", "starting"])
def test_a_process_with_live_workers_that_ignore_sigterm_still_exits_cleanly(workers):
    # multiprocessing ends daemon children with SIGTERM at exit and waits: without our exit hook it waits forever
    script = [sys.executable, "-c", EXIT_WITH_LIVE_WORKERS, workers]
    done = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "exiting" in done.stdout
    assert "killed by signal" not in done.stderr and "Traceback" not in done.stderr
