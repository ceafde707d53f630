"""SIGKILLs at random moments, some in the middle of a checkpoint write: every resume ends bit-identical."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.reliability.faults import command, records, same_weights, start, wait_for_update

KEYS = ("optimization.max_update=16", "checkpoint.save_interval_updates=2", "checkpoint.keep_interval_updates=2",
        "common.seed=5")


def kill_during_a_save(process, save_dir, limit_s: float = 60) -> bool:
    """SIGKILL the run while a temporary checkpoint file exists; False when the run ended first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if save_dir.is_dir() and any(name.endswith(".tmp") for name in os.listdir(save_dir)):
            os.killpg(process.pid, signal.SIGKILL)
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_random_sigkills_resume_to_the_uninterrupted_model(tiny_manifest, tmp_path, seed):
    reference = start(command(tiny_manifest, tmp_path / "reference", *KEYS))
    assert reference.wait(timeout=600) == 0
    rng, run = random.Random(seed), tmp_path / "run"
    save_dir = run / "checkpoints"
    kills = {"between updates": 0, "during a save": 0}
    for attempt in range(12):
        process = start(command(tiny_manifest, run, *KEYS))
        if attempt % 2:
            killed = kill_during_a_save(process, save_dir)
            kills["during a save"] += killed
        else:
            done = max([r["num_updates"] for r in records(run) if r["tag"] == "train_inner"], default=0)
            try:
                wait_for_update(process, run, min(done + rng.randint(1, 4), 15), limit_s=300)
                time.sleep(rng.uniform(0, 0.3))
                os.killpg(process.pid, signal.SIGKILL)
                killed = True
                kills["between updates"] += 1
            except AssertionError:  # the run ended before that update
                killed = False
        process.wait(timeout=600)
        if not killed:
            break
    final = start(command(tiny_manifest, run, *KEYS))
    output, _ = final.communicate(timeout=600)
    assert final.returncode == 0, output[-3000:]
    assert "resuming from" in output and "Traceback" not in output
    assert kills["during a save"] >= 1 and kills["between updates"] >= 1, kills
    assert same_weights(tmp_path / "reference" / "checkpoints" / "checkpoint_last.pt",
                        save_dir / "checkpoint_last.pt") is None
    assert [r["num_updates"] for r in records(run) if r["tag"] == "train_inner"] == list(range(1, 17))
    assert not [name for name in os.listdir(save_dir) if name.endswith(".tmp")]
