"""`w2v2 plot`: training curves from a synthetic log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from w2v2.cli.main import main
from w2v2.cli.plot import _score_panel, plot_run, read_log
from w2v2.errors import W2v2Error


def fine_tuning_records() -> List[Dict[str, float]]:
    """What a CTC fine-tuning run logs: train_inner every 10 updates, an epoch and a validation every 40."""
    records: List[Dict[str, float]] = []
    for update in range(10, 81, 10):
        records.append({"tag": "train_inner", "epoch": 1, "loss": 300.0 / update, "wps": 900.0 + update,
                        "audio_s_per_s": 4.0, "lr": 1e-5 * update, "num_updates": update})
        if update % 40 == 0:
            records.append({"tag": "train", "epoch": 1, "train_loss": 9.0, "train_wps": 950.0,
                            "train_num_updates": update})
            records.append({"tag": "valid", "epoch": 1, "valid_loss": 12.0 / update, "valid_wer": 4000.0 / update,
                            "valid_num_updates": update, "valid_best_wer": 4000.0 / update})
    return records


def write_log(run_dir: Path, records: List[Dict[str, float]], tail: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run_dir


def test_records_lose_their_tag_prefix_and_a_cut_last_line_is_skipped(tmp_path):
    log = read_log(write_log(tmp_path, fine_tuning_records(), tail='{"tag": "train_inner", "lo'))
    assert log.series("valid", "wer") == ([40, 80], [100.0, 50.0])
    assert log.series("train", "wps") == ([40, 80], [950.0, 950.0])
    assert log.train_tag() == "train_inner"
    assert len(log.records) == 12


def test_fine_tuning_plot_is_a_png(tmp_path, capsys):
    run = write_log(tmp_path / "run", fine_tuning_records())
    assert main(["plot", str(run)]) == 0
    image = imread(run / "training.png")
    assert image.shape[:2] == (800, 1200)
    assert image[..., :3].std() > 0.05  # something is drawn
    assert f"wrote {run / 'training.png'}" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == ["log.jsonl", "training.png"]  # no temporary file left


@pytest.mark.parametrize("records, title", [
    (fine_tuning_records(), "word error rate"),
    ([{"tag": "train_inner", "loss": 6.5, "accuracy": 0.2, "num_updates": 10},
      {"tag": "valid", "valid_loss": 6.4, "valid_accuracy": 0.25, "valid_num_updates": 10}], "contrastive accuracy"),
    ([{"tag": "train_inner", "loss": 250.0, "wps": 170.0, "num_updates": 10}], "no WER logged (validation was off)"),
])
def test_the_second_panel_shows_wer_else_accuracy_else_says_so(tmp_path, records, title):
    ax = Figure().subplots()
    _score_panel(ax, read_log(write_log(tmp_path, records)))
    assert ax.get_title() == title


def test_pretraining_plot_with_only_epoch_records(tmp_path):
    run = write_log(tmp_path, [{"tag": "train", "train_loss": 6.5, "train_accuracy": 0.2, "train_wps": 80.0,
                                "train_audio_s_per_s": 3.0, "train_lr": 5e-4, "train_num_updates": 3}])
    assert read_log(run).train_tag() == "train"
    out = plot_run(run, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and out.stat().st_size > 10_000


def test_errors_name_the_file(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path} has no log.jsonl" in capsys.readouterr().err
    write_log(tmp_path, [], tail="\n")
    with pytest.raises(W2v2Error, match="log.jsonl holds no training records"):
        plot_run(tmp_path)
    write_log(tmp_path, fine_tuning_records())
    with pytest.raises(W2v2Error, match="the folder .*missing does not exist"):
        plot_run(tmp_path, tmp_path / "missing" / "x.png")
