"""Greedy and lexicon beam-search decoders, lexicon reading, and the optional flashlight import."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from w2v2.errors import W2v2Error
from w2v2.inference.decoding import (
    GreedyDecoder,
    LexiconBeamDecoder,
    LmOptions,
    alignment_scores,
    build_decoder,
    read_lexicon,
)
from w2v2.train.losses import error_counts, greedy_decode, letters_to_words


def spelled_emissions(dictionary, text, frames_per_symbol=3, other=-12.0):
    """(T, 1, V) log-probs that say `text` letter by letter, blanks between, `|` after words; `other`
    is the score of every symbol not said."""
    symbols = []
    for word in text.split():
        symbols += [s for letter in word for s in (letter, "<s>")] + ["|"]
    lprobs = torch.full((len(symbols) * frames_per_symbol, 1, len(dictionary)), other)
    for i, symbol in enumerate(symbols):
        lprobs[i * frames_per_symbol : (i + 1) * frames_per_symbol, 0, dictionary.index(symbol)] = 0.0
    return torch.log_softmax(lprobs, -1)


def test_greedy_alignments_round_trip_through_scores():
    torch.manual_seed(0)
    lprobs = torch.randn(20, 3, 8).log_softmax(-1)
    lengths = torch.tensor([20, 13, 1])
    paths = GreedyDecoder().alignments(lprobs, lengths)
    assert [len(p) for p in paths] == [20, 13, 1]
    assert torch.equal(paths[1], lprobs[:13, 1].argmax(-1))
    assert greedy_decode(alignment_scores(paths, 8), lengths) == greedy_decode(lprobs, lengths)


def test_build_decoder_without_lm_is_greedy(ctc_model):
    assert isinstance(build_decoder(ctc_model.dictionary), GreedyDecoder)


def test_lexicon_beam_search_spells_lexicon_words(ctc_model, small_lm):
    pytest.importorskip("flashlight.lib.text")
    dictionary = ctc_model.dictionary
    decoder = build_decoder(dictionary, LmOptions(str(small_lm[0]), str(small_lm[1]), beam=20))
    assert isinstance(decoder, LexiconBeamDecoder) and "beam 20" in decoder.description
    clear = spelled_emissions(dictionary, "GO LEFT TWO")
    path = decoder.alignments(clear, torch.tensor([len(clear)]))[0]
    assert len(path) == len(clear)
    assert letters_to_words(dictionary.string(greedy_decode(alignment_scores([path], len(dictionary)),
                                                            torch.tensor([len(path)]))[0])) == "GO LEFT TWO"
    # Letters of a word outside the lexicon still come out as lexicon words.
    odd = spelled_emissions(dictionary, "GOX LEFF")
    tokens = greedy_decode(alignment_scores(decoder.alignments(odd, torch.tensor([len(odd)])), len(dictionary)),
                           torch.tensor([len(odd)]))[0]
    words = letters_to_words(dictionary.string(tokens)).split()
    lexicon = {line.split()[0] for line in small_lm[1].read_text().splitlines()}
    assert words and set(words) <= lexicon


@pytest.mark.parametrize("line, message", [
    ("GO G O X1 |", "missing from the dictionary: X1"),
    ("GO G A |", "does not spell the word"),
    ("GO G | O |", "does not spell the word"),
    ("GO", "does not spell the word"),
])
def test_bad_lexicon_lines_are_refused(ctc_model, tmp_path, line, message):
    path = tmp_path / "lexicon.txt"
    path.write_text(f"ONE O N E |\n{line}\n")
    with pytest.raises(W2v2Error, match=f"line 2: .*{message}"):
        read_lexicon(str(path), ctc_model.dictionary)


def test_lexicon_reading(ctc_model, tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("ONE O N E |\n\nONE O N E\nDON'T D O N ' T |\n")
    assert read_lexicon(str(path), ctc_model.dictionary) == {
        "ONE": [["O", "N", "E", "|"], ["O", "N", "E"]], "DON'T": [["D", "O", "N", "'", "T", "|"]]}
    path.write_text("\n")
    with pytest.raises(W2v2Error, match="at least one word"):
        read_lexicon(str(path), ctc_model.dictionary)
    with pytest.raises(W2v2Error, match="cannot read the lexicon"):
        read_lexicon(str(tmp_path / "missing.txt"), ctc_model.dictionary)


def test_missing_or_broken_lm_is_refused(ctc_model, small_lm, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    with pytest.raises(W2v2Error, match="does not exist"):
        LexiconBeamDecoder(ctc_model.dictionary, LmOptions(str(tmp_path / "none.arpa"), str(small_lm[1])))
    broken = tmp_path / "broken.arpa"
    broken.write_text("this is not an ARPA file\n")
    with pytest.raises(W2v2Error, match="KenLM cannot read"):
        LexiconBeamDecoder(ctc_model.dictionary, LmOptions(str(broken), str(small_lm[1])))


def test_missing_flashlight_names_the_extra(ctc_model, small_lm, monkeypatch):
    for name in ("flashlight", "flashlight.lib.text", "flashlight.lib.text.decoder.kenlm"):
        monkeypatch.setitem(sys.modules, name, None)  # makes importing it fail
    with pytest.raises(W2v2Error, match=r"pip install 'w2v2\[lm\]'"):
        build_decoder(ctc_model.dictionary, LmOptions(str(small_lm[0]), str(small_lm[1])))


def test_beam_alignment_spells_exactly_the_decoders_words(ctc_model, small_lm):
    pytest.importorskip("flashlight.lib.text")
    dictionary = ctc_model.dictionary
    decoder = LexiconBeamDecoder(dictionary, LmOptions(str(small_lm[0]), str(small_lm[1]), beam=10))
    unfinished = spelled_emissions(dictionary, "GO RIGH", 2, other=-1e4)[:-4]  # ends inside RIGHT
    torch.manual_seed(0)
    with torch.no_grad():
        noise = ctc_model.get_normalized_probs(ctc_model(torch.randn(1, 24000) * 0.1))
    for lprobs in (unfinished, noise):
        frames = lprobs[:, 0].contiguous()
        best = decoder.decoder.decode(frames.data_ptr(), frames.size(0), frames.size(1))[0]
        expected = [decoder.word_dict.get_entry(w) for w in best.words if w >= 0]
        path = decoder.alignments(lprobs, torch.tensor([len(lprobs)]))[0]
        tokens = greedy_decode(alignment_scores([path], len(dictionary)), torch.tensor([len(path)]))[0]
        assert letters_to_words(dictionary.string(tokens)).split() == expected


def confused_emissions(dictionary, text, rng, confusion=0.3):
    """(T, 1, V) log-probs of `text` where a `confusion` share of letters lose to a random other letter."""
    letters = [i for i, s in enumerate(dictionary.symbols) if s.isalpha() and len(s) == 1]
    frames = []
    for symbol in " ".join(text.split()) + " ":
        index = dictionary.index("|" if symbol == " " else symbol)
        scores = torch.full((len(dictionary),), -8.0)
        scores[index] = 0.0
        if symbol != " " and rng.random() < confusion:
            scores[letters[int(rng.integers(len(letters)))]] = 0.5
        frames += [scores, scores, torch.full((len(dictionary),), -8.0).index_fill(0, torch.tensor([0]), 0.0)]
    return torch.stack(frames)[:, None].log_softmax(-1)


def test_demo_lm_corrects_confused_letters_of_unseen_dev_sentences(ctc_model):
    pytest.importorskip("flashlight.lib.text")
    repo = Path(__file__).resolve().parents[2]
    dev = sorted((repo / "examples" / "demo_corpus" / "dev-clean").rglob("*.trans.txt"))
    lm_dir = repo / "examples" / "lm"
    lm = LmOptions(str(lm_dir / "demo_3gram.arpa"), str(lm_dir / "demo_lexicon.txt"))
    if not dev or not Path(lm.lm_path).is_file():
        pytest.skip("the demo corpus or its LM is not there")
    dictionary = ctc_model.dictionary
    sentences = [line.split(maxsplit=1)[1] for path in dev for line in path.read_text().splitlines()][:100]
    rng = np.random.default_rng(0)
    decoders = {"greedy": GreedyDecoder(), "lm": LexiconBeamDecoder(dictionary, lm)}
    errors = {name: 0 for name in decoders}
    for sentence in sentences:
        lprobs = confused_emissions(dictionary, sentence, rng)
        lengths = torch.tensor([len(lprobs)])
        target = dictionary.encode_line(" ".join(sentence.replace(" ", "|")) + " |")[0][None]
        for name, decoder in decoders.items():
            scores = alignment_scores(decoder.alignments(lprobs, lengths), len(dictionary))
            errors[name] += error_counts(scores, lengths, target, dictionary)["w_errors"]
    words = sum(len(sentence.split()) for sentence in sentences)
    assert errors["greedy"] > 0.3 * words  # the letters are badly confused...
    assert errors["lm"] < 0.5 * errors["greedy"]  # ...and the LM and lexicon repair most words
