"""`w2v2 evaluate`: summary line, fairseq's result files, and argument errors."""

from __future__ import annotations

import json

import pytest

from tests.corpus import WORDS
from w2v2.cli.main import main
from w2v2.inference.ngram import write_lm_files


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
