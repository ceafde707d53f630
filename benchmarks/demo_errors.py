"""Where the demo's greedy word errors are: WER by kind of transcript (digits, number, command, book), by dev
speaker, and by how often each reference word occurs in the training transcripts.

    PYTHONPATH=. python benchmarks/demo_errors.py --workdir demo_run --output errors.json

`--workdir` is a `w2v2 demo` folder: its best fine-tuned checkpoint is decoded on `dev_clean` as the demo
decodes it (greedy, validation's batching), and the training words are counted in its `train.wrd`.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import editdistance

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ROOT / "examples" / "demo_corpus" / "texts.py"
# Upper bounds of the training-frequency buckets; the last bucket is open.
FREQUENCY_EDGES = (0, 4, 19, 99)


@dataclass
class Tally:
    """Word errors over a group of utterances (kind, speaker) or of reference words (frequency bucket)."""

    utterances: int = 0
    words: int = 0
    errors: int = 0

    @property
    def wer(self) -> float:
        """Errors per reference word, percent."""
        return 100.0 * self.errors / max(self.words, 1)

    def to_json(self) -> Dict[str, float]:
        return {**asdict(self), "wer": round(self.wer, 2)}


def word_hits(reference: Sequence[str], hypothesis: Sequence[str]) -> List[bool]:
    """Whether each reference word came out right: it lies in a block of words the hypothesis matches
    (difflib's matching blocks; an edit-distance alignment can pair words differently in ties)."""
    hits = [False] * len(reference)
    matcher = difflib.SequenceMatcher(a=list(reference), b=list(hypothesis), autojunk=False)
    for start, _, size in matcher.get_matching_blocks():
        hits[start:start + size] = [True] * size
    return hits


def frequency_bucket(count: int) -> str:
    """The name of the bucket of a word seen `count` times in training: `0`, `1-4`, `5-19`, `20-99`, `100+`."""
    low = 0
    for high in FREQUENCY_EDGES:
        if count <= high:
            return f"{low}-{high}" if low < high else str(high)
        low = high + 1
    return f"{low}+"


def speaker_of(path: str) -> str:
    """The speaker of a LibriSpeech-named file, SPEAKER-CHAPTER-UTT.ext."""
    return Path(path).name.split("-")[0]


def breakdown(utterances: Iterable[Tuple[str, str, str]], train_counts: Mapping[str, int],
              kind_of: Callable[[str], str]) -> Dict[str, Dict[str, Tally]]:
    """Tallies of (speaker, reference, hypothesis) word strings by kind, by speaker and by the training
    frequency of each reference word. Kind and speaker count edit-distance errors, as WER does; a frequency
    bucket counts its reference words that did not come out right (`word_hits`), which leaves insertions out."""
    tables: Dict[str, Dict[str, Tally]] = {"kind": {}, "speaker": {}, "train_frequency": {}}
    for speaker, reference, hypothesis in utterances:
        ref, hyp = reference.split(), hypothesis.split()
        errors = editdistance.eval(ref, hyp)
        for table, key in (("kind", kind_of(reference)), ("speaker", speaker)):
            tally = tables[table].setdefault(key, Tally())
            tally.utterances += 1
            tally.words += len(ref)
            tally.errors += errors
        for word, hit in zip(ref, word_hits(ref, hyp)):
            tally = tables["train_frequency"].setdefault(frequency_bucket(train_counts.get(word, 0)), Tally())
            tally.words += 1
            tally.errors += not hit
    order = [frequency_bucket(edge) for edge in FREQUENCY_EDGES] + [frequency_bucket(FREQUENCY_EDGES[-1] + 1)]
    tables["train_frequency"] = {key: tables["train_frequency"][key] for key in order if key in tables["train_frequency"]}
    tables["kind"] = dict(sorted(tables["kind"].items()))
    tables["speaker"] = dict(sorted(tables["speaker"].items()))
    return tables


def demo_kinds(texts_path: Path = TEXTS) -> Callable[[str], str]:
    """A classifier of transcripts into the demo corpus's kinds, from the generator's own word lists and
    command templates: `digits`, `number`, `command`, else `book`."""
    spec = importlib.util.spec_from_file_location("demo_corpus_texts", texts_path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{texts_path} cannot be imported; it holds the demo corpus's word lists.")
    texts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(texts)
    digits = set(texts.DIGITS)
    numbers = {texts.number_words(n) for n in range(1000)}

    def slot(match: re.Match) -> str:
        return "(?:" + "|".join(map(re.escape, texts.SLOTS[match.group(1)])) + ")"

    commands = re.compile("|".join(re.sub(r"\{(\w+)\}", slot, template) for template in texts.COMMANDS))

    def kind_of(transcript: str) -> str:
        if set(transcript.split()) <= digits:
            return "digits"
        if transcript in numbers:
            return "number"
        return "command" if commands.fullmatch(transcript) else "book"

    return kind_of


def word_counts(path: Path) -> collections.Counter:
    """How often each word occurs in a `.wrd` label file."""
    from w2v2.data.labels import read_labels

    return collections.Counter(word for line in read_labels(path) for word in line.split())


def print_tables(tables: Dict[str, Dict[str, Tally]], total: Tally) -> None:
    """Each group's WER, and the points of the total WER its errors make up."""
    print(f"{'group':<24} {'utts':>5} {'words':>6} {'errors':>6} {'WER %':>6} {'points':>6}")
    for name, table in tables.items():
        for key, tally in table.items():
            utterances = str(tally.utterances) if name != "train_frequency" else ""
            points = 100.0 * tally.errors / max(total.words, 1)
            print(f"{name + ' ' + key:<24} {utterances:>5} {tally.words:>6} {tally.errors:>6} {tally.wer:>6.1f} "
                  f"{points:>6.1f}")
    rare = [t for k, t in tables["train_frequency"].items() if not k.endswith("+")]
    print(f"summary: WER {total.wer:.1f} % over {total.words} words; the {sum(t.words for t in rare)} reference "
          f"words seen at most {FREQUENCY_EDGES[-1]} times in training make "
          f"{100.0 * sum(t.errors for t in rare) / max(total.words, 1):.1f} points of it")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a `w2v2 demo` folder")
    parser.add_argument("--checkpoint", type=Path, help="default: WORKDIR/finetune/checkpoints/checkpoint_best.pt")
    parser.add_argument("--subset", default="dev_clean")
    parser.add_argument("--output", type=Path, help="write the tables as JSON here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from w2v2.errors import W2v2Error
    from w2v2.fileio import write_text_atomically
    from w2v2.inference.evaluate import evaluate

    args = parse_args(argv)
    manifest = args.workdir / "manifest"
    checkpoint = args.checkpoint or args.workdir / "finetune" / "checkpoints" / "checkpoint_best.pt"
    try:
        train_counts = word_counts(manifest / "train.wrd")
        result = evaluate(checkpoint, manifest, args.subset, progress=False)
    except W2v2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    tables = breakdown(((speaker_of(u.path), u.reference, u.hypothesis) for u in result.details), train_counts,
                       demo_kinds())
    total = Tally(result.utterances, result.words, result.word_errors)
    print_tables(tables, total)
    if args.output:
        report = {"checkpoint": str(checkpoint), "subset": result.subset, "decoder": result.decoder,
                  "total": total.to_json(), "uer": round(result.uer, 2),
                  **{name: {k: t.to_json() for k, t in table.items()} for name, table in tables.items()}}
        write_text_atomically(args.output, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
