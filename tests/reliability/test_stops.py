"""Runs that cannot train stop with an explanation; SIGTERM and SIGINT save, say where, and exit 128 + N."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from w2v2.cli.hydra_train import main
from w2v2.errors import W2v2Error
from w2v2.train import loop
from tests.corpus import FIXTURE_CONFIGS
from tests.reliability.faults import REPO, command, copy_corpus, records, start, updates_of, wait_for_update
from tests.train.tiny_configs import finetuning, pretraining


def test_every_utterance_too_long_stops_naming_the_count_and_the_key(tiny_manifest, tmp_path):
    with pytest.raises(W2v2Error) as error:
        loop.train(finetuning(tiny_manifest, "dataset.max_tokens=1000"), tmp_path)
    message = str(error.value)
    assert "all 24 of its utterances were left out" in message and "24 are longer than `dataset.max_tokens`" in message
    assert "(1000 samples" in message and "raise it" in message
    assert not (tmp_path / "checkpoints" / "checkpoint_last.pt").exists()  # no empty epochs saved


def test_every_utterance_too_short_names_min_sample_size(tiny_manifest, tmp_path):
    with pytest.raises(W2v2Error, match=r"24 are shorter than `task.min_sample_size` \(40000 samples"):
        loop.train(pretraining(tiny_manifest, "task.min_sample_size=40000"), tmp_path)


def test_manifest_with_only_its_root_line_stops_through_the_command(tiny_manifest, tmp_path, capsys):
    manifest = copy_corpus(tiny_manifest, tmp_path / "corpus")
    train = manifest / "train.tsv"
    train.write_text(train.read_text().splitlines()[0] + "\n")
    code = main(["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={manifest}",
                 f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "lists no utterance, only its root line" in err and str(train) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_update_saves_and_exits_128_plus_n(tiny_manifest, tmp_path, signum):
    """SIGTERM as `kill PID` sends it; SIGINT as a terminal's Ctrl-C does, to the process group, data workers too."""
    run = tmp_path / "run"
    workers = 1 if signum == signal.SIGINT else 0
    process = start(command(tiny_manifest, run, "optimization.max_update=500", "checkpoint.save_interval_updates=1000",
                            f"dataset.num_workers={workers}"))
    wait_for_update(process, run, 2)
    if workers:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output[-3000:]
    last = run / "checkpoints" / "checkpoint_last.pt"
    saved = updates_of(last)
    logged = max(r["num_updates"] for r in records(run) if r["tag"] == "train_inner")
    assert saved == logged >= 2  # the update in progress was finished, and nothing after it started
    stopped = [line for line in output.splitlines() if "stopped by" in line]
    assert len(stopped) == 1 and f"stopped by {signum.name} after update {saved}: saved {last}" in stopped[0]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert output.count(f"{signum.name} received") == 1  # the data worker left it to the training process


STOP_SIGNALS_SCRIPT = textwrap.dedent("""
    import os, signal, time
    from w2v2.train.interrupts import StopSignals
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C forwarded by torchrun: counts once
        time.sleep(0.1)
        print("still running after", signals.received, flush=True)
        time.sleep(1.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    print("left normally")
""")


def test_a_second_ctrl_c_exits_at_once_but_a_forwarded_copy_of_the_first_does_not():
    done = subprocess.run([sys.executable, "-c", STOP_SIGNALS_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert f"still running after {int(signal.SIGINT)}" in done.stdout
    assert done.returncode == 130 and "left normally" not in done.stdout
    assert "SIGINT received again: exiting at once, without saving." in done.stderr


def test_ctrl_c_before_the_first_update_says_nothing_was_saved(tiny_manifest, tmp_path, monkeypatch, capsys):
    def interrupted_while_setting_up(cfg, run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted_while_setting_up)
    code = main(["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_pretrain", f"task.data={tiny_manifest}",
                 f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted before training started; nothing was saved." in err and "Traceback" not in err
