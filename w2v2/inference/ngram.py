"""Word n-gram language models in ARPA format (interpolated Kneser-Ney) and letter lexicons, for the
beam-search decoder; pure Python, so small LMs need none of KenLM's tools.

The model is interpolated Kneser-Ney with one discount per order, `D = n1 / (n1 + 2 n2)` from that
order's count-of-counts. The highest order and n-grams that begin with `<s>` use raw counts, the
others the number of distinct words seen before them. Written in ARPA's backoff form it is exact: a
seen n-gram stores its interpolated probability, and its context stores the interpolation weight
`D · N1+(h ·) / c(h)` as the backoff weight, which is the mass left for unseen words. Unigrams are
interpolated with the uniform distribution over the vocabulary (with `</s>` and `<unk>`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from w2v2.errors import W2v2Error
from w2v2.fileio import write_texts_atomically

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NO_PROBABILITY = -99.0  # log10 "probability" ARPA gives `<s>`, which is never predicted
Gram = Tuple[str, ...]


@dataclass
class NgramModel:
    """log10 probabilities and backoff weights of every stored n-gram, by order (1-based)."""

    order: int
    logprob: Dict[Gram, float]
    backoff: Dict[Gram, float]
    vocabulary: List[str]  # every word that can be predicted: the seen ones, `</s>` and `<unk>`

    def score(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context) by ARPA's backoff rule (words outside the vocabulary are `<unk>`)."""
        word = word if (word,) in self.logprob else UNK
        context = tuple(context)[max(0, len(context) - self.order + 1) :]
        penalty = 0.0
        while context + (word,) not in self.logprob:
            penalty += self.backoff.get(context, 0.0)
            context = context[1:]
        return penalty + self.logprob[context + (word,)]

    def to_arpa(self) -> str:
        """The model as ARPA text: `\\data\\` counts, then one section per order, n-grams sorted."""
        by_order: Dict[int, List[Gram]] = defaultdict(list)
        for gram in self.logprob:
            by_order[len(gram)].append(gram)
        lines = ["", "\\data\\"] + [f"ngram {n}={len(by_order[n])}" for n in range(1, self.order + 1)]
        for n in range(1, self.order + 1):
            lines += ["", f"\\{n}-grams:"]
            for gram in sorted(by_order[n]):
                entry = f"{self.logprob[gram]:.6f}\t{' '.join(gram)}"
                if n < self.order and gram in self.backoff:
                    entry += f"\t{self.backoff[gram]:.6f}"
                lines.append(entry)
        return "\n".join(lines + ["", "\\end\\", ""])


def kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3) -> NgramModel:
    """An interpolated Kneser-Ney model of `sentences` (lists of words; `<s>`/`</s>` are added)."""
    if order < 1:
        raise W2v2Error(f"`order` must be 1 or more, but is {order} instead.")
    counts = _raw_counts(sentences, order)
    if all(gram[0] in (BOS, EOS) for gram in counts[1]):
        raise W2v2Error("the LM text has no words; give it at least one non-empty sentence.")
    adjusted = _adjusted_counts(counts, order)
    vocabulary = sorted({gram[0] for gram in counts[1]} - {BOS} | {EOS, UNK})
    logprob, backoff = _unigrams(adjusted[1], vocabulary)
    for n in range(2, order + 1):
        _add_order(adjusted[n], logprob, backoff)
    return NgramModel(order, logprob, backoff, vocabulary)


def _raw_counts(sentences: Iterable[Sequence[str]], order: int) -> Dict[int, Counter]:
    """Occurrences of every n-gram (n = 1..order) in the sentences padded with `<s>` and `</s>`."""
    counts: Dict[int, Counter] = {n: Counter() for n in range(1, order + 1)}
    for sentence in sentences:
        for word in sentence:
            if word in (BOS, EOS, UNK) or not word or any(c.isspace() for c in word):
                raise W2v2Error(f"LM words must be non-empty, without spaces and not {BOS}, {EOS} or "
                                f"{UNK}, but {word!r} is one of them.")
        padded = (BOS, *sentence, EOS)
        for n in range(1, order + 1):
            counts[n].update(tuple(padded[i : i + n]) for i in range(len(padded) - n + 1))
    return counts


def _adjusted_counts(counts: Dict[int, Counter], order: int) -> Dict[int, Counter]:
    """Kneser-Ney counts: raw at the highest order and after `<s>`, else distinct left neighbours."""
    adjusted = {order: counts[order]}
    for n in range(1, order):
        left_neighbours = Counter(gram[1:] for gram in counts[n + 1])
        adjusted[n] = Counter({gram: count if gram[0] == BOS else left_neighbours[gram]
                               for gram, count in counts[n].items()})
    return adjusted


def _discount(counts: Counter) -> float:
    """Ney's discount n1 / (n1 + 2 n2) from the count-of-counts; 0.5 when a count-of-count is 0."""
    of_counts = Counter(counts.values())
    n1, n2 = of_counts[1], of_counts[2]
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def _unigrams(counts: Counter, vocabulary: List[str]) -> Tuple[Dict[Gram, float], Dict[Gram, float]]:
    """Unigram log10 probabilities, interpolated with the uniform distribution over `vocabulary`."""
    predicted = {gram: count for gram, count in counts.items() if gram != (BOS,)}
    discount, total = _discount(Counter(predicted)), sum(predicted.values())
    uniform = discount * len(predicted) / total / len(vocabulary)
    logprob = {(word,): math.log10(max(predicted.get((word,), 0) - discount, 0) / total + uniform)
               for word in vocabulary}
    logprob[(BOS,)] = NO_PROBABILITY
    return logprob, {}


def _add_order(counts: Counter, logprob: Dict[Gram, float], backoff: Dict[Gram, float]) -> None:
    """Add one order's n-grams to `logprob` and their contexts' weights to `backoff`."""
    discount = _discount(counts)
    context_total: Counter = Counter()
    context_types: Counter = Counter()
    for gram, count in counts.items():
        context_total[gram[:-1]] += count
        context_types[gram[:-1]] += 1
    weight = {context: discount * context_types[context] / total for context, total in context_total.items()}
    for gram, count in counts.items():
        context = gram[:-1]
        lower = 10.0 ** logprob[gram[1:]]
        logprob[gram] = math.log10((count - discount) / context_total[context] + weight[context] * lower)
    backoff.update((context, math.log10(value)) for context, value in weight.items())


def lexicon_lines(words: Iterable[str]) -> List[str]:
    """fairseq's letter lexicon for `words`, sorted: `WORD W O R D |` per word."""
    return [f"{word} {' '.join(word)} |" for word in sorted(set(words))]


def write_lm_files(sentences: Sequence[Sequence[str]], arpa: Path, lexicon: Path, order: int = 3) -> NgramModel:
    """Write the Kneser-Ney ARPA model of `sentences` and the lexicon of their words, atomically."""
    model = kneser_ney(sentences, order)
    words = (word for sentence in sentences for word in sentence)
    outputs = {arpa: model.to_arpa(), lexicon: "".join(f"{line}\n" for line in lexicon_lines(words))}
    write_texts_atomically(outputs)
    return model
