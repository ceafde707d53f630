"""`evaluate`: fairseq's greedy validation counts, LM decoding, result files, and refusals."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import soundfile
import torch

import w2v2
import w2v2.inference.evaluate as evaluate_module
from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.inference.decoding import LmOptions
from w2v2.inference.evaluate import (
    PER_UTTERANCE,
    autocast_dtype,
    choose_batching,
    evaluate,
    validation_batching,
    write_results,
)
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


def shown(hypotheses):
    """fairseq's validation hypotheses as people see them: `<pad>` and `<unk>` predictions left out."""
    return [" ".join(re.sub("<pad>|<unk>", "", h).split()) for h in hypotheses]


def test_greedy_counts_are_fairseq_validation_counts(ctc_checkpoint, ctc_model, tiny_manifest):
    longest = max(int(line.split()[1]) for line in (tiny_manifest / "dev_clean.tsv").read_text().splitlines()[1:])
    # A budget of one utterance per batch: no padding, so every utterance can be checked on its own.
    result = evaluate(ctc_checkpoint, tiny_manifest, "dev-clean", max_tokens=longest, device="cpu", progress=False)
    expected, hypotheses = unbatched_counts(ctc_model, tiny_manifest, "dev_clean")
    assert (result.letter_errors, result.letters, result.word_errors, result.words) == (
        expected["c_errors"], expected["c_total"], expected["w_errors"], expected["w_total"])
    assert result.subset == "dev_clean" and result.utterances == 8 and result.decoder == "greedy"
    assert [u.hypothesis for u in result.details] == shown(hypotheses)
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


def totals(result) -> dict:
    """The error counts of an evaluation, keyed as `error_counts` keys them."""
    return {"c_errors": result.letter_errors, "c_total": result.letters, "w_errors": result.word_errors,
            "w_total": result.words}


def with_cfg(checkpoint, target, **groups):
    """A copy of `checkpoint` whose config groups have the values of `groups` ({group: {key: value}})."""
    model = w2v2.load_model(checkpoint)
    cfg = {**model.fairseq_cfg, **{name: {**model.fairseq_cfg[name], **values} for name, values in groups.items()}}
    w2v2.save_checkpoint(target, model, cfg, dictionary=model.dictionary)
    return target


def test_per_utterance_is_unchanged_by_batching_and_equals_single_forwards(ctc_checkpoint, ctc_model, tiny_manifest,
                                                                            tmp_path):
    expected, hypotheses = unbatched_counts(ctc_model, tiny_manifest, "dev_clean")
    batched = []
    for name, dataset in (("pairs", {"max_tokens_valid": 64000}), ("all", {"max_tokens_valid": 10**7})):
        checkpoint = with_cfg(ctc_checkpoint, tmp_path / f"{name}.pt", dataset=dataset)
        exact = evaluate(checkpoint, tiny_manifest, "dev_clean", per_utterance=True, device="cpu", progress=False)
        assert totals(exact) == expected and [u.hypothesis for u in exact.details] == shown(hypotheses)
        assert exact.batching == "one utterance per batch (--per-utterance)" and exact.utterances == 8
        batched.append(evaluate(checkpoint, tiny_manifest, "dev_clean", device="cpu", progress=False))
        assert f"{dataset['max_tokens_valid']} samples (dataset.max_tokens_valid)" in batched[-1].batching
    # The two batchings give different letters: batching does matter, and per-utterance mode ignores it.
    assert totals(batched[0]) != totals(batched[1])


def test_people_see_no_special_symbols_but_the_counts_keep_them(special_checkpoint, tiny_manifest, tmp_path):
    model = w2v2.load_model(special_checkpoint)
    expected, hypotheses = unbatched_counts(model, tiny_manifest, "dev_clean")
    assert any("<pad>" in h for h in hypotheses) and any("<unk>" in h for h in hypotheses)
    result = evaluate(special_checkpoint, tiny_manifest, "dev_clean", per_utterance=True, device="cpu", progress=False)
    assert totals(result) == expected  # fairseq's validation counts a predicted <pad> as a letter
    assert [u.hypothesis for u in result.details] == shown(hypotheses)
    assert all("<" not in text for u in result.details
               for text in (u.hypothesis, u.hypothesis_units, u.reference, u.reference_units))
    for path in write_results(result, tmp_path / "out"):
        assert "<" not in path.read_text(), path.name


def test_utterances_validation_leaves_out_are_left_out(ctc_checkpoint, tiny_manifest, tmp_path):
    sizes = [int(line.split()[1]) for line in (tiny_manifest / "dev_clean.tsv").read_text().splitlines()[1:]]
    budget = sorted(sizes)[5]
    checkpoint = with_cfg(ctc_checkpoint, tmp_path / "small.pt", dataset={"max_tokens_valid": budget},
                          task={"min_sample_size": sorted(sizes)[1]})
    result = evaluate(checkpoint, tiny_manifest, "dev_clean", device="cpu", progress=False)
    assert result.left_out == sum(size > budget for size in sizes) + 1 == 3 and result.utterances == 5
    assert "3 utterances left out as validation leaves them out" in result.line()
    with pytest.raises(W2v2Error, match="`--max-tokens` must be at least the longest utterance"):
        evaluate(checkpoint, tiny_manifest, "dev_clean", max_tokens=budget, progress=False)


def test_validation_refusing_long_utterances_makes_evaluation_refuse_them(ctc_checkpoint, tiny_manifest, tmp_path):
    sizes = [int(line.split()[1]) for line in (tiny_manifest / "dev_clean.tsv").read_text().splitlines()[1:]]
    checkpoint = with_cfg(ctc_checkpoint, tmp_path / "strict.pt", dataset={
        "max_tokens_valid": sorted(sizes)[5], "skip_invalid_size_inputs_valid_test": False})
    with pytest.raises(W2v2Error, match=rf"2 utterances of dev_clean are longer than the checkpoint's validation budget"
                       rf".*`dataset.skip_invalid_size_inputs_valid_test` is false\); pass `--max-tokens {max(sizes)}`"):
        evaluate(checkpoint, tiny_manifest, "dev_clean", device="cpu", progress=False)
    assert evaluate(checkpoint, tiny_manifest, "dev_clean", per_utterance=True, device="cpu",
                    progress=False).utterances == 8


def test_batches_are_cut_to_the_runs_required_batch_size_multiple(ctc_checkpoint, tiny_manifest, tmp_path, monkeypatch):
    samplers = []
    real = evaluate_module.build_dataloader
    monkeypatch.setattr(evaluate_module, "build_dataloader", lambda dataset, sampler: samplers.append(sampler)
                        or real(dataset, sampler))
    for multiple in (3, 1):
        checkpoint = with_cfg(ctc_checkpoint, tmp_path / f"m{multiple}.pt", dataset={
            "max_tokens_valid": 10**7, "required_batch_size_multiple": multiple})
        result = evaluate(checkpoint, tiny_manifest, "dev_clean", device="cpu", progress=False)
        assert ("cut to multiples of 3 utterances (dataset.required_batch_size_multiple)" in result.batching) == (
            multiple == 3)
    assert [len(batch) for batch in samplers[0].batches()] == [6, 2]
    assert [len(batch) for batch in samplers[1].batches()] == [8]
    assert validation_batching({"dataset": {}}).batch_size_multiple == 8  # fairseq's default
    given = evaluate(ctc_checkpoint, tiny_manifest, "dev_clean", max_tokens=10**7, device="cpu", progress=False)
    assert [len(batch) for batch in samplers[-1].batches()] == [8] and "cut to" not in given.batching


@pytest.mark.parametrize("dataset, limits, shown", [
    ({"max_tokens": 100, "max_tokens_valid": None, "batch_size": 4, "batch_size_valid": 2}, (100, 2),
     "100 samples (dataset.max_tokens) and 2 utterances (dataset.batch_size_valid)"),
    ({"max_tokens": 100, "max_tokens_valid": 50, "batch_size": None}, (50, None), "50 samples (dataset.max_tokens_valid)"),
    ({"max_tokens": None}, (None, None), "the longest utterance's samples"),
])
def test_validation_batching_is_read_as_the_trainer_reads_it(dataset, limits, shown):
    batching = validation_batching({"dataset": dataset})
    assert (batching.max_tokens, batching.batch_size) == limits and shown in batching.description
    assert batching.from_checkpoint


def test_batching_choices_and_their_errors():
    cfg = {"dataset": {"max_tokens": 100, "batch_size_valid": 2}}
    assert validation_batching({"model": {}}).batch_size == 1  # an args-era file records no batching
    given = choose_batching(cfg, 1000, None, per_utterance=False)
    assert (given.max_tokens, given.batch_size, given.from_checkpoint) == (1000, None, False)  # replaces both
    assert choose_batching(cfg, None, None, per_utterance=True) == PER_UTTERANCE
    with pytest.raises(W2v2Error, match="`--batch-size` has no effect with `--per-utterance`"):
        choose_batching(cfg, None, 4, per_utterance=True)
    with pytest.raises(W2v2Error, match="`--max-tokens` must be a positive number, but is 0"):
        choose_batching(cfg, 0, None, per_utterance=False)
    with pytest.raises(W2v2Error, match=r"`dataset.max_tokens` must be a positive integer or null, but is 'big'"):
        validation_batching({"dataset": {"max_tokens": "big"}})


def test_precision_follows_the_run_where_the_device_can():
    cpu = torch.device("cpu")
    assert autocast_dtype({"common": {"fp16": True}}, "auto", cpu) is None  # no fp16 kernels on the CPU
    assert autocast_dtype({"common": {"bf16": True}}, "auto", cpu) == torch.bfloat16
    assert autocast_dtype({"common": {"bf16": True}}, "fp32", cpu) is None
    gpu = torch.device("cuda")  # the dtype is chosen without touching the device
    assert autocast_dtype({"common": {"fp16": True}}, "auto", gpu) == torch.float16
    assert autocast_dtype({"common": {"amp": True}}, "auto", gpu) is None  # amp validates in fp32
    assert autocast_dtype({"common": {"amp": True}}, "fp16", gpu) == torch.float16
    with pytest.raises(W2v2Error, match="`--precision fp16` needs a GPU or NPU"):
        autocast_dtype({}, "fp16", cpu)
