"""fairseq's symbol dictionary (`dict.ltr.txt`): four specials, then one symbol per line."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

import torch

from w2v2.errors import W2v2Error
from w2v2.fileio import write_text_atomically

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class Dictionary:
    """Symbols and counts with fairseq's special indices: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3.

    The attribute names are those of `fairseq.data.dictionary.Dictionary`, so a pickled fairseq
    dictionary found in a checkpoint unpickles into this class.
    """

    def __init__(self, symbols: Iterable[str] = (), counts: Iterable[int] | None = None) -> None:
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = SPECIALS
        self.symbols: List[str] = []
        self.count: List[int] = []
        self.indices: dict = {}
        for special in SPECIALS:
            self.add_symbol(special, 1)
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = range(4)
        self.nspecial = len(SPECIALS)
        symbols = list(symbols)
        counts = list(counts) if counts is not None else [1] * len(symbols)
        for symbol, count in zip(symbols, counts):
            self.add_symbol(symbol, count)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dictionary":
        """Read a fairseq dictionary file (`SYMBOL COUNT` per line, most frequent first)."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
            raise W2v2Error(f"cannot read dictionary {path}: {reason}.") from error
        dictionary = cls()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            symbol, _, count = line.rstrip().rpartition(" ")
            if count.endswith("#fairseq:overwrite"):
                raise W2v2Error(f"{path}, line {number}: '#fairseq:overwrite' entries are not supported.")
            if not symbol or not count.isdigit():
                raise W2v2Error(
                    f"{path}, line {number}: expected 'SYMBOL COUNT', but the line is {line!r} instead."
                )
            if symbol in dictionary.indices:
                raise W2v2Error(f"{path}, line {number}: symbol {symbol!r} appears twice.")
            dictionary.add_symbol(symbol, int(count))
        if len(dictionary) == dictionary.nspecial:
            raise W2v2Error(f"dictionary {path} must list the symbols of the labels ('SYMBOL COUNT' per line), but it "
                            "lists none, so every label would become <unk>; write it with `w2v2 prepare dict`.")
        return dictionary

    def save(self, path: str | os.PathLike) -> None:
        """Write the non-special symbols as `SYMBOL COUNT` lines, atomically."""
        path = Path(path)
        body = "".join(f"{s} {c}\n" for s, c in zip(self.symbols[self.nspecial :], self.count[self.nspecial :]))
        write_text_atomically(path, body)

    def add_symbol(self, symbol: str, count: int = 1) -> int:
        """Add `symbol` (or raise its count) and return its index."""
        if symbol in self.indices:
            index = self.indices[symbol]
            self.count[index] += count
            return index
        self.indices[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        self.count.append(count)
        return self.indices[symbol]

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, index: int) -> str:
        return self.symbols[index] if 0 <= index < len(self.symbols) else self.unk_word

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def index(self, symbol: str) -> int:
        """Index of `symbol`, or of `<unk>` when it is unknown."""
        return self.indices.get(symbol, self.unk_index)

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def unk(self) -> int:
        return self.unk_index

    def bos(self) -> int:
        return self.bos_index

    def encode_line(self, line: str) -> Tuple[torch.Tensor, int]:
        """Encode a whitespace-separated label line; returns (indices, number of unknown symbols)."""
        ids = [self.index(token) for token in line.split()]
        return torch.tensor(ids, dtype=torch.long), sum(1 for i in ids if i == self.unk_index)

    def string(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Space-joined symbols as fairseq's `Dictionary.string` gives them (`<s>` and `</s>` left out)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        skip = {self.bos_index, self.eos_index}
        return " ".join(self[i] for i in ids if i not in skip)

    def is_special(self, index: int) -> bool:
        """Whether `index` is a control symbol rather than text: the four specials, any `<...>` symbol
        (such as `<ctc_blank>` or `<mask>`), and an index outside the dictionary."""
        if not self.nspecial <= index < len(self.symbols):
            return True
        symbol = self.symbols[index]
        return len(symbol) > 2 and symbol.startswith("<") and symbol.endswith(">")

    def text(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Space-joined symbols for people to read: like `string`, but every special symbol left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return " ".join(self.symbols[i] for i in ids if not self.is_special(i))


def dictionary_from_lines(lines: Iterable[str]) -> Dictionary:
    """Count the whitespace-separated symbols of label lines: most frequent first, ties alphabetical."""
    counts = Counter(symbol for line in lines for symbol in line.split())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return Dictionary([symbol for symbol, _ in ordered], [count for _, count in ordered])
