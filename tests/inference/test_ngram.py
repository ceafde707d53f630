"""The pure-Python Kneser-Ney ARPA writer: normalised, Kneser-Ney-like, and readable by KenLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from w2v2.errors import W2v2Error
from w2v2.inference.ngram import EOS, UNK, kneser_ney, lexicon_lines, write_lm_files

SENTENCES = [s.split() for s in (
    "GO LEFT", "GO RIGHT NOW", "TURN LEFT NOW", "STOP", "GO LEFT TWO STEPS", "HELLO", "HELLO GO",
    "DON'T STOP", "GO LEFT", "TURN RIGHT",
)]
REPO = Path(__file__).resolve().parents[2]


def contexts(model):
    """Every context the model can be asked about: all proper prefixes of stored n-grams."""
    found = {()}
    for gram in model.logprob:
        found.update(gram[:n] for n in range(1, min(len(gram), model.order - 1) + 1))
    return {context for context in found if EOS not in context}


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(order):
    model = kneser_ney(SENTENCES, order)
    for context in contexts(model):
        total = sum(10 ** model.score(context, word) for word in model.vocabulary)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_continuation_counts_shape_the_unigrams():
    # FRANCISCO is frequent but always follows SAN; B is rarer but follows three words.
    sentences = [["SAN", "FRANCISCO"]] * 5 + [["A", "B"], ["C", "B"], ["D", "B"]]
    model = kneser_ney(sentences, 2)
    assert model.score((), "B") > model.score((), "FRANCISCO")
    assert model.score(("SAN",), "FRANCISCO") > model.score(("A",), "FRANCISCO")
    assert model.score(("A",), "NEVER_SEEN") == model.score((), UNK) + model.backoff[("A",)]


def test_arpa_header_matches_sections():
    text = kneser_ney(SENTENCES, 3).to_arpa()
    declared = {int(n): int(count) for n, count in re.findall(r"ngram (\d+)=(\d+)", text)}
    sections = re.split(r"\\(\d)-grams:", text)[1:]
    found = {int(n): len([line for line in body.strip().splitlines() if line and not line.startswith("\\")])
             for n, body in zip(sections[::2], sections[1::2])}
    assert declared == found and set(declared) == {1, 2, 3}
    assert "-99.000000\t<s>\t" in text and f"\t{UNK}\n" in text and text.rstrip().endswith("\\end\\")


def test_kenlm_reads_the_arpa_and_agrees(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    model = write_lm_files(SENTENCES, tmp_path / "lm.arpa", tmp_path / "lexicon.txt", 3)
    words = {line.split()[0]: [line.split()[1:]] for line in (tmp_path / "lexicon.txt").read_text().splitlines()}
    word_dict = create_word_dict({UNK: [], **words})
    kenlm = KenLM(str(tmp_path / "lm.arpa"), word_dict)
    state, history = kenlm.start(False), ["<s>"]
    for word in ["GO", "LEFT", "NOW", "HELLO"]:
        state, score = kenlm.score(state, word_dict.get_index(word))
        assert score == pytest.approx(model.score(history, word), abs=1e-5)
        history.append(word)
    _, score = kenlm.finish(state)
    assert score == pytest.approx(model.score(history, EOS), abs=1e-5)


def test_lexicon_and_files(tmp_path):
    assert lexicon_lines(["GO", "DON'T", "GO"]) == ["DON'T D O N ' T |", "GO G O |"]
    write_lm_files(SENTENCES, tmp_path / "lm.arpa", tmp_path / "lex.txt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lex.txt", "lm.arpa"]
    assert (tmp_path / "lex.txt").read_text().splitlines()[0] == "DON'T D O N ' T |"


@pytest.mark.parametrize("sentences, message", [([[]], "no words"), ([["A", "<s>"]], "'<s>'"), ([["A B"]], "'A B'")])
def test_bad_text_is_refused(sentences, message):
    with pytest.raises(W2v2Error, match=message):
        kneser_ney(sentences)


def test_committed_demo_lm_is_built_from_train_text_only():
    arpa, lexicon = REPO / "examples" / "lm" / "demo_3gram.arpa", REPO / "examples" / "lm" / "demo_lexicon.txt"
    corpus = REPO / "examples" / "demo_corpus"
    if not arpa.is_file() or not (corpus / "train-clean-100").is_dir():
        pytest.skip("the demo corpus or its LM is not there")
    train = [line.split()[1:] for path in sorted((corpus / "train-clean-100").rglob("*.trans.txt"))
             for line in path.read_text().splitlines() if line.split()[1:]]
    assert arpa.read_text() == kneser_ney(train, 3).to_arpa()
    assert lexicon.read_text().splitlines() == lexicon_lines(word for sentence in train for word in sentence)
