"""`w2v2 evaluate`: summary line, fairseq's result files, and argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.corpus import FIXTURE_CONFIGS, WORDS
from w2v2.cli.hydra_train import main as hydra_train
from w2v2.cli.main import main
from w2v2.inference.ngram import write_lm_files
from w2v2.interop.safe_load import load_checkpoint_file
from w2v2.train.progress import read_run_log


def test_evaluate_greedy_writes_results(fairseq_dir, tiny_manifest, tmp_path, capsys):
    ckpt = str(fairseq_dir / "ctc_init.pt")
    out = tmp_path / "results"
    assert main(["evaluate", "--checkpoint", ckpt, "--data", str(tiny_manifest), "--subset", "dev-clean",
                 "--results-path", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "dev_clean: WER " in printed and "x real time), greedy" in printed and "wrote 5 files" in printed
    summary = json.loads((out / "result-ctc_init.pt-dev_clean.json").read_text())
    assert summary["utterances"] == 8 and summary["words"] == 24 and summary["decoder"] == "greedy"
    assert len((out / "ref.word-ctc_init.pt-dev_clean.txt").read_text().splitlines()) == 8
    assert not list(out.glob("*.tmp"))


def test_evaluate_with_lm(fairseq_dir, tiny_manifest, tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text")
    write_lm_files([WORDS[:3], WORDS[3:], WORDS[::2]], tmp_path / "lm.arpa", tmp_path / "lexicon.txt")
    assert main(["evaluate", "--checkpoint", str(fairseq_dir / "ctc_init.pt"), "--data", str(tiny_manifest),
                 "--subset", "dev_clean", "--lm-path", str(tmp_path / "lm.arpa"), "--lexicon",
                 str(tmp_path / "lexicon.txt"), "--beam", "5", "--lm-weight", "1.5"]) == 0
    assert "beam 5, LM lm.arpa weight 1.5, word score -1.0, 6-word lexicon" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--lm-path", "lm.arpa"], "`--lm-path` needs `--lexicon` as well"),
    (["--lexicon", "lexicon.txt"], "`--lexicon` needs `--lm-path` as well"),
    (["--lm-path", "lm.arpa", "--lexicon", "lexicon.txt", "--beam", "0"], "`--beam` must be 1 or more"),
    (["--subset", "test_other"], "test_other.tsv does not exist"),
])
def test_evaluate_argument_errors(fairseq_dir, tiny_manifest, capsys, extra, message):
    args = ["evaluate", "--checkpoint", str(fairseq_dir / "ctc_init.pt"), "--data", str(tiny_manifest),
            "--subset", "dev_clean", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def fine_tuned_run(fairseq_dir, tiny_manifest, tmp_path_factory) -> Path:
    """A tiny CTC fine-tuning run validated at updates 4 and 8 in padded batches of 3, 3 and 2 utterances (3, 4 and 1
    without the required multiple of 3)."""
    run = tmp_path_factory.mktemp("finetune")
    assert hydra_train(["--config-dir", str(FIXTURE_CONFIGS), "--config-name", "tiny_ctc", f"task.data={tiny_manifest}",
                        f"model.w2v_path={fairseq_dir / 'pretrain_init.pt'}", f"hydra.run.dir={run}",
                        "optimization.max_update=8", "dataset.validate_interval_updates=4",
                        "dataset.max_tokens_valid=100000", "dataset.required_batch_size_multiple=3"]) == 0
    return run


def evaluated(checkpoint: Path, manifest: Path, out: Path, *flags: str) -> dict:
    """The JSON result of `w2v2 evaluate` on the valid subset."""
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(manifest), "--subset", "valid",
                 "--device", "cpu", "--results-path", str(out), *flags]) == 0
    return json.loads((out / f"result-{checkpoint.name}-valid.json").read_text())


@pytest.mark.parametrize("name", ["checkpoint_best.pt", "checkpoint_last.pt"])
def test_evaluate_reproduces_the_logged_validation(fine_tuned_run, tiny_manifest, tmp_path, capsys, name):
    checkpoint = fine_tuned_run / "checkpoints" / name
    updates = load_checkpoint_file(checkpoint)["optimizer_history"][-1]["num_updates"]
    logged = [values for tag, values in read_run_log(fine_tuned_run)
              if tag == "valid" and values["valid_num_updates"] == updates][-1]
    result = evaluated(checkpoint, tiny_manifest, tmp_path / "default")
    assert "at most 100000 samples (dataset.max_tokens_valid)" in capsys.readouterr().out
    # The log holds rates; with the totals (the references' letters and words) they give the error counts.
    assert result["letter_errors"] == round(logged["valid_uer"] * result["letters"] / 100)
    assert result["word_errors"] == round(logged["valid_wer"] * result["words"] / 100)
    assert (result["uer"], result["wer"]) == pytest.approx((logged["valid_uer"], logged["valid_wer"]), rel=1e-12)
    # evaluate's old fixed batching (1.6 M samples: all 8 utterances in one batch) gives other letters,
    # so the match above depends on reading the checkpoint's batching.
    other = evaluated(checkpoint, tiny_manifest, tmp_path / "one_batch", "--max-tokens", "1600000")
    assert other["letter_errors"] != result["letter_errors"]
    assert "at most 1600000 samples (--max-tokens)" in capsys.readouterr().out
