"""CTC decoders that turn frame log-probabilities into frame alignments: greedy (best path) and a
lexicon-constrained beam search with a KenLM word n-gram (flashlight-text, an optional extra).

Both return one alignment per utterance: the symbol chosen at every frame. Merging repeats and
dropping blanks gives the letters (`w2v2.train.losses.greedy_decode` on `alignment_scores`), and the
letters give the words: a lexicon must spell every word with its own letters, and the letters of a
last word the beam search left unfinished (which it does not emit) are made blank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Protocol, Sequence

import torch

from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error

SILENCE = "|"  # the word separator of fairseq's letter dictionaries
UNKNOWN_WORD = "<unk>"
INSTALL_HINT = "pip install 'w2v2[lm]'"


class Decoder(Protocol):
    """What evaluation needs of a decoder."""

    description: str

    def alignments(self, lprobs: torch.Tensor, lengths: torch.Tensor) -> List[torch.Tensor]:
        """One (length,) tensor of symbol indices per utterance of `lprobs` (T, B, V)."""


@dataclass
class LmOptions:
    """The beam search with a word n-gram; the defaults are the wav2vec 2.0 paper's 4-gram settings."""

    lm_path: str
    """KenLM model: ARPA text (`.arpa`) or KenLM's binary format (`.bin`)."""
    lexicon: str
    """Lines `WORD W O R D |`: the words the decoder may emit and their letters."""
    beam: int = 50
    """Hypotheses kept per frame."""
    beam_threshold: float = 25.0
    """Hypotheses scoring this much below the best are dropped."""
    lm_weight: float = 2.0
    """Weight of the LM's natural-log probability against the acoustic score."""
    word_score: float = -1.0
    """Added per emitted word (negative values favour fewer, longer words)."""
    sil_weight: float = 0.0
    """Added per emitted word separator `|`."""


class GreedyDecoder:
    """Best path: the most probable symbol of every frame."""

    description = "greedy"

    def alignments(self, lprobs: torch.Tensor, lengths: torch.Tensor) -> List[torch.Tensor]:
        """Argmax symbol per frame, cut to each utterance's length."""
        best = lprobs.argmax(-1).T.cpu()  # (T, B) -> (B, T)
        return [row[:length] for row, length in zip(best, lengths.tolist())]


class LexiconBeamDecoder:
    """flashlight's lexicon decoder: letters must spell lexicon words, which a KenLM model scores."""

    def __init__(self, dictionary: Dictionary, options: LmOptions) -> None:
        text = _import_flashlight()
        if SILENCE not in dictionary.indices:
            raise W2v2Error(f"the dictionary must contain the word separator {SILENCE!r} for LM decoding, "
                            f"but its symbols are {' '.join(dictionary.symbols[dictionary.nspecial:])} instead.")
        lexicon = read_lexicon(options.lexicon, dictionary)
        self.word_dict = text.create_word_dict({UNKNOWN_WORD: [], **lexicon})  # flashlight needs `<unk>`
        self.lm = _load_kenlm(text, options.lm_path, self.word_dict)
        self.silence, self.blank = dictionary.index(SILENCE), dictionary.bos()
        trie = self._trie(text, lexicon, dictionary, self.silence)
        decoder_options = text.LexiconDecoderOptions(
            beam_size=options.beam, beam_size_token=len(dictionary), beam_threshold=options.beam_threshold,
            lm_weight=options.lm_weight, word_score=options.word_score, unk_score=-math.inf,
            sil_score=options.sil_weight, log_add=False, criterion_type=text.CriterionType.CTC,
        )
        self.decoder = text.LexiconDecoder(decoder_options, trie, self.lm, self.silence, self.blank,
                                           self.word_dict.get_index(UNKNOWN_WORD), [], False)
        self.description = (f"beam {options.beam}, LM {Path(options.lm_path).name} weight {options.lm_weight}, "
                            f"word score {options.word_score}, {len(lexicon)}-word lexicon")

    def _trie(self, text: SimpleNamespace, lexicon: Dict[str, List[List[str]]], dictionary: Dictionary,
              silence: int) -> Any:
        """The spelling trie, each word weighted by its unigram LM score (smeared to prefixes)."""
        trie = text.Trie(len(dictionary), silence)
        start = self.lm.start(False)
        for word, spellings in lexicon.items():
            index = self.word_dict.get_index(word)
            _, score = self.lm.score(start, index)
            for spelling in spellings:
                trie.insert([dictionary.index(symbol) for symbol in spelling], index, score)
        trie.smear(text.SmearingMode.MAX)
        return trie

    def alignments(self, lprobs: torch.Tensor, lengths: torch.Tensor) -> List[torch.Tensor]:
        """The best beam's symbol per frame, for each utterance."""
        emissions = lprobs.detach().float().cpu()
        paths = []
        for b, length in enumerate(lengths.tolist()):
            frames = emissions[:length, b].contiguous()  # (T, V), kept alive while the decoder reads it
            best = self.decoder.decode(frames.data_ptr(), length, frames.size(1))[0]
            # flashlight's tokens and words hold a start state before the frames and an end state after.
            path = torch.tensor(best.tokens[1 : length + 1], dtype=torch.long)
            emitted = [frame for frame, word in enumerate(best.words[1:]) if word >= 0]
            # Letters of a last word the search did not finish are not among its words: make them blank.
            tail = path[min(emitted[-1] + 1, length) if emitted else 0 :]
            tail[tail != self.silence] = self.blank
            paths.append(path)
        return paths


def build_decoder(dictionary: Dictionary, lm: Optional[LmOptions] = None) -> Decoder:
    """Greedy decoding, or the lexicon beam search with an n-gram when `lm` is given."""
    return GreedyDecoder() if lm is None else LexiconBeamDecoder(dictionary, lm)


def alignment_scores(alignments: Sequence[torch.Tensor], num_symbols: int) -> torch.Tensor:
    """(T, B, V) scores whose per-frame argmax is the alignment: 0 on it, -inf elsewhere."""
    longest = max((len(path) for path in alignments), default=0)
    scores = torch.full((longest, len(alignments), num_symbols), -math.inf)
    for b, path in enumerate(alignments):
        scores[torch.arange(len(path)), b, path] = 0.0
    return scores


def read_lexicon(path: str, dictionary: Dictionary) -> Dict[str, List[List[str]]]:
    """Spellings per word of a fairseq letter lexicon; every spelling is the word's own letters."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise W2v2Error(f"cannot read the lexicon {path}: {error.strerror}.") from error
    lexicon: Dict[str, List[List[str]]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        word, *spelling = line.split()
        letters = spelling[:-1] if spelling[-1:] == [SILENCE] else spelling
        unknown = [symbol for symbol in spelling if symbol not in dictionary.indices]
        if unknown or SILENCE in letters or "".join(letters) != word:
            problem = f"uses symbols missing from the dictionary: {' '.join(unknown)}" if unknown else \
                "does not spell the word with its letters"
            raise W2v2Error(f"{path}, line {number}: a lexicon line must be `WORD W O R D |` in the model's "
                            f"letters, but {line.strip()!r} {problem}.")
        lexicon.setdefault(word, []).append(spelling)
    if not lexicon:
        raise W2v2Error(f"the lexicon {path} must list at least one word, but it is empty.")
    return lexicon


def _import_flashlight() -> SimpleNamespace:
    """flashlight-text's decoder classes, its `create_word_dict` and `KenLM`, in one namespace."""
    try:
        from flashlight.lib.text import decoder, dictionary
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError as error:
        raise W2v2Error(f"decoding with a language model needs the flashlight-text package, which is not "
                        f"installed ({error}); install it with `{INSTALL_HINT}`, or leave out `--lm-path` "
                        f"for greedy decoding.") from error
    names = ("LexiconDecoder", "LexiconDecoderOptions", "Trie", "SmearingMode", "CriterionType")
    return SimpleNamespace(KenLM=KenLM, create_word_dict=dictionary.create_word_dict,
                           **{name: getattr(decoder, name) for name in names})


def _load_kenlm(text: SimpleNamespace, path: str, word_dict: Any) -> Any:
    """KenLM's model of `path` over the lexicon's words, with errors that name the file."""
    if not Path(path).is_file():
        raise W2v2Error(f"`--lm-path` must be a KenLM model file (.arpa or .bin), but {path} does not exist.")
    try:
        return text.KenLM(str(path), word_dict)
    except Exception as error:  # KenLM reports format errors as assorted C++ exceptions
        raise W2v2Error(f"KenLM cannot read the language model {path} ({error}); "
                        "it must be an ARPA file or a KenLM binary.") from error
