"""Log records: fairseq's derived metrics and number format, JSON lines."""

from __future__ import annotations

import json
import logging
import math

import pytest

from w2v2.errors import W2v2Error
from w2v2.train.progress import RunLog, derive, fairseq_value, read_console_records, read_run_log, setup_console_logging


def test_derived_metrics_follow_fairseq():
    sums = {"loss": 200.0 * math.log(2), "sample_size": 2.0, "ntokens": 50.0, "nsentences": 2.0, "c_errors": 5.0,
            "c_total": 50.0, "w_errors": 1.0, "wv_errors": 2.0, "w_total": 10.0, "audio_seconds": 8.0, "batches": 2.0}
    values = derive(sums, seconds=2.0, updates=1)
    assert values["loss"] == pytest.approx(100.0)  # summed nats / sentences, in bits
    assert values["nll_loss"] == pytest.approx(4.0)  # per letter
    assert values["uer"] == 10.0 and values["wer"] == 10.0 and values["raw_wer"] == 20.0
    assert values["wps"] == 25.0 and values["audio_s_per_s"] == 4.0 and values["bsz"] == 2.0


def test_pretraining_accuracy_and_averaged_perplexity():
    values = derive({"loss": 10.0, "sample_size": 10.0, "ntokens": 10.0, "correct": 3.0, "count": 10.0,
                     "code_perplexity": 60.0, "batches": 2.0}, 1.0, 1)
    assert values["accuracy"] == 0.3 and values["code_perplexity"] == 30.0 and "nll_loss" not in values


def test_values_print_as_fairseq_prints_them():
    assert fairseq_value("loss", 3.14159) == "3.142"
    assert fairseq_value("train_wps", 5524.7333) == "5524.7"
    assert fairseq_value("lr", 5e-05) == "5e-05"
    assert fairseq_value("wall", 12.7) == "13"


def test_run_log_writes_lines_and_jsonl(tmp_path, caplog):
    log = RunLog(tmp_path, "json")
    with caplog.at_level("INFO"):
        log.record("valid", {"epoch": 1, "valid_wer": 12.3456, "valid_best_wer": 10.0}, step=5)
    log.close()
    line = json.loads(caplog.records[-1].getMessage())
    assert line == {"epoch": 1, "valid_wer": "12.346", "valid_best_wer": "10"}
    assert list(line)[-1] == "valid_best_wer"
    stored = json.loads((tmp_path / "log.jsonl").read_text())
    assert stored["tag"] == "valid" and stored["valid_wer"] == 12.3456


def test_the_readers_give_back_what_run_log_wrote(tmp_path):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # pytest's own, put back below
    try:
        setup_console_logging(tmp_path / "hydra_train.log")
        log = RunLog(tmp_path, "json")
        log.record("train_inner", {"epoch": 1, "loss": 3.14159, "num_updates": 10}, step=10)
        log.record("valid", {"epoch": 1, "valid_wer": 12.3456, "valid_best_wer": 10.0, "note": "text"}, step=10)
        log.close()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    with (tmp_path / "log.jsonl").open("a") as handle:
        handle.write('{"tag": "valid", "valid_w')  # a record cut short by a running job
    records = read_run_log(tmp_path)
    assert [tag for tag, _ in records] == ["train_inner", "valid"]
    assert records[1][1] == {"time": records[1][1]["time"], "epoch": 1, "valid_wer": 12.3456, "valid_best_wer": 10.0}
    console = list(read_console_records((tmp_path / "hydra_train.log").read_text() + "epoch 001:  50%|#####\n"))
    assert console == [("train_inner", {"epoch": "1", "loss": "3.142", "num_updates": "10"}),
                       ("valid", {"epoch": "1", "valid_wer": "12.346", "valid_best_wer": "10", "note": "text"})]
    with pytest.raises(W2v2Error, match="has no log.jsonl"):
        read_run_log(tmp_path / "elsewhere")
