"""`w2v2 evaluate`: WER and UER of a fine-tuned model on a manifest subset, greedy or with an n-gram LM."""

from __future__ import annotations

import argparse

from w2v2.errors import W2v2Error
from w2v2.inference.decoding import LmOptions
from w2v2.inference.evaluate import evaluate, write_results


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="word and letter error rates of a CTC checkpoint on a subset")
    parser.add_argument("--checkpoint", required=True, help="fine-tuned (wav2vec_ctc) checkpoint")
    parser.add_argument("--data", required=True,
                        help="folder with SUBSET.tsv and its labels, SUBSET.ltr (the checkpoint's task.labels)")
    parser.add_argument("--subset", required=True, help="manifest name, e.g. dev_clean (dev-clean is the same)")
    parser.add_argument("--lm-path", help="KenLM word n-gram (.arpa or .bin) for beam search; needs w2v2[lm]")
    parser.add_argument("--lexicon", help="lines 'WORD W O R D |': the words the LM decoder may emit")
    defaults = LmOptions("", "")
    parser.add_argument("--beam", type=int, default=defaults.beam, help="hypotheses kept per frame")
    parser.add_argument("--beam-threshold", type=float, default=defaults.beam_threshold,
                        help="drop hypotheses this far below the best")
    parser.add_argument("--lm-weight", type=float, default=defaults.lm_weight, help="weight of the LM score")
    parser.add_argument("--word-score", type=float, default=defaults.word_score, help="score added per word")
    parser.add_argument("--sil-weight", type=float, default=defaults.sil_weight, help="score added per '|'")
    parser.add_argument("--max-tokens", type=int,
                        help="audio samples per batch (default: the batching of the run's validation, from the "
                             "checkpoint's dataset.max_tokens_valid / max_tokens, which reproduces its logged WER)")
    parser.add_argument("--batch-size", type=int,
                        help="utterances per batch (default: the checkpoint's dataset.batch_size_valid / "
                             "batch_size); --max-tokens and --batch-size replace the checkpoint's batching")
    parser.add_argument("--per-utterance", action="store_true",
                        help="encode every utterance alone: exact, unchanged by any batching (and slower)")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="autocast dtype (default auto: the run's common.fp16 / bf16; fp16 needs a GPU or NPU)")
    parser.add_argument("--results-path", help="write hypo.word-*, ref.word-*, *.units-* and result-*.json here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or npu")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow a checkpoint with arbitrary pickles")
    parser.set_defaults(func=run)


def lm_options(args: argparse.Namespace) -> LmOptions | None:
    """The LM decoding options, or None for greedy decoding."""
    if args.lm_path is None and args.lexicon is None:
        return None
    if args.lm_path is None or args.lexicon is None:
        given, missing = ("--lm-path", "--lexicon") if args.lexicon is None else ("--lexicon", "--lm-path")
        raise W2v2Error(f"`{given}` needs `{missing}` as well: the beam search spells the LM's words "
                        "with the lexicon's letters.")
    if args.beam < 1:
        raise W2v2Error(f"`--beam` must be 1 or more, but is {args.beam} instead.")
    return LmOptions(args.lm_path, args.lexicon, args.beam, args.beam_threshold, args.lm_weight,
                     args.word_score, args.sil_weight)


def run(args: argparse.Namespace) -> int:
    lm = lm_options(args)
    result = evaluate(args.checkpoint, args.data, args.subset, lm, max_tokens=args.max_tokens,
                      batch_size=args.batch_size, per_utterance=args.per_utterance, precision=args.precision,
                      device=args.device, trusted=args.trust_checkpoint)
    print(result.line())
    if args.results_path:
        written = write_results(result, args.results_path)
        print(f"wrote {len(written)} files to {args.results_path}")
    return 0
