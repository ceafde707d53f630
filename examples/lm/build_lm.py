"""Build the demo's word 3-gram LM (ARPA, Kneser-Ney) and letter lexicon from the demo corpus's TRAIN
transcripts only, so that the dev transcripts stay unseen:

    python examples/lm/build_lm.py            # -> examples/lm/demo_3gram.arpa, examples/lm/demo_lexicon.txt

Use them with `w2v2 evaluate ... --lm-path examples/lm/demo_3gram.arpa --lexicon examples/lm/demo_lexicon.txt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

from w2v2.errors import W2v2Error
from w2v2.inference.ngram import write_lm_files

HERE = Path(__file__).resolve().parent


def read_transcripts(folder: Path) -> List[List[str]]:
    """The words of every `*.trans.txt` line (`UTTID WORDS...`) under `folder`, in sorted file order."""
    files = sorted(folder.rglob("*.trans.txt"))
    if not files:
        raise W2v2Error(f"no *.trans.txt transcripts under {folder}; generate the demo corpus first "
                        "(python examples/demo_corpus/generate.py).")
    return [line.split()[1:] for path in files for line in path.read_text(encoding="utf-8").splitlines()
            if line.split()[1:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=HERE.parent / "demo_corpus" / "train-clean-100",
                        help="folder searched for LibriSpeech *.trans.txt files (train only!)")
    parser.add_argument("--order", type=int, default=3, help="n-gram order")
    parser.add_argument("--arpa", type=Path, default=HERE / "demo_3gram.arpa", help="ARPA file to write")
    parser.add_argument("--lexicon", type=Path, default=HERE / "demo_lexicon.txt", help="lexicon to write")
    args = parser.parse_args()
    try:
        sentences = read_transcripts(args.text)
        model = write_lm_files(sentences, args.arpa, args.lexicon, args.order)
    except W2v2Error as error:
        print(f"build_lm.py: error: {error}", file=sys.stderr)
        return 2
    grams = [sum(1 for gram in model.logprob if len(gram) == n) for n in range(1, args.order + 1)]
    print(f"{len(sentences)} sentences, {sum(map(len, sentences))} words, {len(model.vocabulary) - 2} word types "
          f"-> {args.arpa} ({' + '.join(map(str, grams))} n-grams), {args.lexicon}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
