"""`evaluate`: fairseq's greedy validation counts, LM decoding, result files, and refusals."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import soundfile
import torch

import w2v2
from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.inference.decoding import LmOptions
from w2v2.inference.evaluate import evaluate, write_results
from w2v2.train.losses import error_counts


def unbatched_counts(model, manifest, subset):
    """error_counts summed over the subset's utterances, each run alone (no padding)."""
    lines = (manifest / f"{subset}.tsv").read_text().splitlines()
    labels = (manifest / f"{subset}.ltr").read_text().splitlines()
    totals = {"c_errors": 0, "c_total": 0, "w_errors": 0, "w_total": 0}
    hypotheses = []
    for entry, label in zip(lines[1:], labels):
        audio, _ = soundfile.read(f"{lines[0]}/{entry.split()[0]}", dtype="float32")
        with torch.no_grad():
            lprobs = model.get_normalized_probs(model(torch.from_numpy(audio)[None]))
        target = model.dictionary.encode_line(label)[0][None]
        counts = error_counts(lprobs, torch.tensor([lprobs.size(0)]), target, model.dictionary)
        for key in totals:
            totals[key] += counts[key]
        hypotheses += counts["hypotheses"]
    return totals, hypotheses


def test_greedy_counts_are_fairseq_validation_counts(ctc_checkpoint, ctc_model, tiny_manifest):
    longest = max(int(line.split()[1]) for line in (tiny_manifest / "dev_clean.tsv").read_text().splitlines()[1:])
    # A budget of one utterance per batch: no padding, so every utterance can be checked on its own.
    result = evaluate(ctc_checkpoint, tiny_manifest, "dev-clean", max_tokens=longest, device="cpu", progress=False)
    expected, hypotheses = unbatched_counts(ctc_model, tiny_manifest, "dev_clean")
    assert (result.letter_errors, result.letters, result.word_errors, result.words) == (
        expected["c_errors"], expected["c_total"], expected["w_errors"], expected["w_total"])
    assert result.subset == "dev_clean" and result.utterances == 8 and result.decoder == "greedy"
    assert [u.hypothesis for u in result.details] == hypotheses
    assert result.uer == pytest.approx(100 * expected["c_errors"] / expected["c_total"])
    assert result.audio_seconds == pytest.approx(
        sum(int(line.split()[1]) for line in (tiny_manifest / "dev_clean.tsv").read_text().splitlines()[1:]) / 16000)
    assert result.realtime_factor > 0 and "WER" in result.line()


def test_lm_decoding_returns_lexicon_words_and_writes_fairseq_files(ctc_checkpoint, tiny_manifest, small_lm, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    lm = LmOptions(str(small_lm[0]), str(small_lm[1]), beam=10)
    result = evaluate(ctc_checkpoint, tiny_manifest, "dev_clean", lm, device="cpu", progress=False)
    lexicon = {line.split()[0] for line in small_lm[1].read_text().splitlines()}
    words = [word for utterance in result.details for word in utterance.hypothesis.split()]
    assert words and set(words) <= lexicon and "beam 10" in result.decoder
    assert result.words == sum(len(u.reference.split()) for u in result.details) == 24
    written = write_results(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    hypo = (tmp_path / "out" / "hypo.word-ctc_init.pt-dev_clean.txt").read_text().splitlines()
    refs = (tmp_path / "out" / "ref.units-ctc_init.pt-dev_clean.txt").read_text().splitlines()
    assert len(hypo) == len(refs) == 8 and all(re.fullmatch(r"[A-Z' ]* \(None-\d+\)", line) for line in hypo)
    assert refs[0] == f"{(tiny_manifest / 'dev_clean.ltr').read_text().splitlines()[0]} (None-0)"
    summary = json.loads((tmp_path / "out" / "result-ctc_init.pt-dev_clean.json").read_text())
    assert summary["wer"] == pytest.approx(result.wer) and summary["word_errors"] == result.word_errors


def test_dictionary_comes_from_data_when_checkpoint_has_none(ctc_checkpoint, tiny_manifest, tmp_path):
    model = w2v2.load_model(ctc_checkpoint)
    letters, model.dictionary = model.dictionary, None
    checkpoint = tmp_path / "no_dict.pt"
    w2v2.save_checkpoint(checkpoint, model)
    data = tmp_path / "data"
    shutil.copytree(tiny_manifest, data)
    # The corpus's own dict.ltr.txt has fewer symbols than the model's 32 outputs.
    with pytest.raises(W2v2Error, match="one symbol per model output, 32"):
        evaluate(checkpoint, data, "dev_clean", progress=False)
    Dictionary(letters.symbols[4:]).save(data / "dict.ltr.txt")
    assert evaluate(checkpoint, data, "dev_clean", progress=False).utterances == 8
    (data / "dict.ltr.txt").unlink()
    with pytest.raises(W2v2Error, match="stores no dictionary, so .*dict.ltr.txt must exist"):
        evaluate(checkpoint, data, "dev_clean", progress=False)


def test_refusals(ctc_checkpoint, fairseq_dir, tiny_manifest, tmp_path):
    with pytest.raises(W2v2Error, match=r"dev_other.tsv does not exist \(available: dev_clean, train, valid\)"):
        evaluate(ctc_checkpoint, tiny_manifest, "dev_other", progress=False)
    with pytest.raises(W2v2Error, match="not a folder"):
        evaluate(ctc_checkpoint, tmp_path / "nowhere", "dev_clean", progress=False)
    with pytest.raises(W2v2Error, match="fine-tuned CTC model"):
        evaluate(fairseq_dir / "pretrain_init.pt", tiny_manifest, "dev_clean", progress=False)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(W2v2Error, match="is not a readable PyTorch checkpoint"):
        evaluate(garbage, tiny_manifest, "dev_clean", progress=False)
    with pytest.raises(W2v2Error, match="`--max-tokens` must be at least the longest utterance"):
        evaluate(ctc_checkpoint, tiny_manifest, "dev_clean", max_tokens=1000, progress=False)
