"""Transcripts for the demo corpus: digit strings, numbers, short commands and short book sentences."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np

BOOK = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "pg1342_pride_and_prejudice.txt"
BOOK_VOCAB = 500  # book sentences may only use the book's 500 most frequent words
BOOK_WORDS = (3, 8)  # shortest and longest book sentence, in words

DIGITS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()
TEENS = "TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN".split()
TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()

# Every command is a template; each {slot} is filled from SLOTS.
COMMANDS = [
    "STOP", "GO", "WAIT", "YES", "NO", "START", "PAUSE", "CANCEL", "HELLO", "REPEAT",
    "TURN {side}", "GO {direction}", "GO {direction} {count} STEPS", "MOVE {direction} {count} STEPS",
    "TURN {switch} THE {device}", "OPEN THE {thing}", "CLOSE THE {thing}",
    "PICK UP THE {color} {object}", "PUT DOWN THE {color} {object}", "SET A TIMER FOR {count} MINUTES",
    # Contractions keep the apostrophe in the alphabet, so dict.ltr.txt has LibriSpeech's 28 symbols.
    "DON'T {halt}", "LET'S GO {direction}", "IT'S {count} O'CLOCK",
]
SLOTS = {
    "side": "LEFT RIGHT AROUND".split(),
    "direction": "FORWARD BACK UP DOWN LEFT RIGHT".split(),
    "count": DIGITS[2:] + ["TEN"],
    "halt": "STOP MOVE WAIT".split(),
    "switch": "ON OFF".split(),
    "device": "LIGHT RADIO FAN HEATER".split(),
    "thing": "DOOR WINDOW BOX GATE".split(),
    "color": "RED GREEN BLUE YELLOW BLACK WHITE".split(),
    "object": "BALL CUP BOOK KEY".split(),
}

# How often each kind of transcript is drawn; digits dominate because they are easiest to learn.
KINDS = {"digits": 0.40, "number": 0.15, "command": 0.30, "book": 0.15}


def digit_string(rng: np.random.Generator) -> str:
    """Return one to five spoken digits, e.g. `THREE SEVEN NINE`."""
    return " ".join(DIGITS[d] for d in rng.integers(0, 10, size=rng.integers(1, 6)))


def number_words(n: int) -> str:
    """Return `n` (0–999) in words, British style: `ONE HUNDRED AND FIVE`."""
    if n < 10:
        return DIGITS[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        return TENS[n // 10] + (" " + DIGITS[n % 10] if n % 10 else "")
    rest = " AND " + number_words(n % 100) if n % 100 else ""
    return DIGITS[n // 100] + " HUNDRED" + rest


def number(rng: np.random.Generator) -> str:
    """Return a number in words, half of them below one hundred."""
    return number_words(int(rng.integers(0, 100) if rng.random() < 0.5 else rng.integers(100, 1000)))


def command(rng: np.random.Generator) -> str:
    """Return a short command such as `GO FORWARD TWO STEPS`."""
    template = COMMANDS[rng.integers(len(COMMANDS))]
    return re.sub(r"\{(\w+)\}", lambda m: SLOTS[m.group(1)][rng.integers(len(SLOTS[m.group(1)]))], template)


def _clean(clause: str) -> list[str]:
    """Return the clause's words in upper case, keeping only A–Z and apostrophes inside words."""
    text = re.sub(r"[^A-Za-z' ]", "", clause.replace("-", " ")).upper()
    return re.sub(r"(?<![A-Z])'|'(?![A-Z])", "", text).split()


def book_sentences(path: Path = BOOK) -> list[str]:
    """Return the book's distinct short clauses that use only its most frequent words, in book order."""
    text = path.read_text(encoding="utf-8")
    body = text.split("*** START OF", 1)[1].split("\n", 1)[1].split("*** END OF", 1)[0]
    # Spell out the titles so the transcript says what espeak-ng speaks; drop the italics marks.
    body = re.sub(r"\bMrs\.", "Missus", re.sub(r"\bMr\.", "Mister", body)).replace("_", "")
    clauses = re.split(r"(?<=[.!?;:])\s+|\s*--\s*|\"", re.sub(r"\s+", " ", body))
    clauses = [_clean(c) for c in clauses if not re.search(r"[0-9]", c)]
    counts = collections.Counter(w for c in clauses for w in c)
    common = {w for w, _ in counts.most_common(BOOK_VOCAB)}
    short = (" ".join(c) for c in clauses if BOOK_WORDS[0] <= len(c) <= BOOK_WORDS[1] and set(c) <= common)
    return list(dict.fromkeys(short))


class TextSource:
    """Draws transcripts of every kind; book sentences come without replacement from a fixed pool."""

    def __init__(self, rng: np.random.Generator, book_pool: list[str]) -> None:
        self.rng = rng
        self.book_pool = book_pool
        self.book_next = 0

    def draw(self) -> tuple[str, str]:
        """Return (kind, transcript) for one utterance."""
        kind = str(self.rng.choice(list(KINDS), p=list(KINDS.values())))
        if kind == "book":
            # Reuse the pool from the start only if a split needs more sentences than it holds.
            text = self.book_pool[self.book_next % len(self.book_pool)]
            self.book_next += 1
            return kind, text
        return kind, {"digits": digit_string, "number": number, "command": command}[kind](self.rng)
