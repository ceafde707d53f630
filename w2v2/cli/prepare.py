"""`w2v2 prepare manifest|labels|dict|librispeech`: fairseq's data preparation tools, same files."""

from __future__ import annotations

import argparse
from typing import Sequence

from w2v2.data.labels import write_dictionary, write_labels
from w2v2.data.librispeech import prepare_librispeech
from w2v2.data.manifest import SkippedFile, write_manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `prepare` and its four sub-commands."""
    parser = subparsers.add_parser("prepare", help="write manifests, label files and dictionaries")
    commands = parser.add_subparsers(dest="prepare_command", required=True)
    _add_manifest(commands)
    _add_labels(commands)
    _add_dict(commands)
    _add_librispeech(commands)


def _add_manifest(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("manifest", help="train.tsv/valid.tsv of the audio under ROOT (wav2vec_manifest.py)")
    parser.add_argument("root", metavar="ROOT", help="directory searched recursively for audio files")
    parser.add_argument("--dest", default=".", metavar="DIR", help="output directory (default: the current one)")
    parser.add_argument("--ext", default="flac", metavar="EXT", help="audio file extension (default: flac)")
    parser.add_argument(
        "--valid-percent", type=float, default=0.01, metavar="P", help="fraction drawn into valid.tsv (0..1)"
    )
    parser.add_argument("--seed", type=int, default=42, metavar="N", help="seed of the train/valid draw")
    parser.add_argument(
        "--path-must-contain", metavar="TEXT", help="keep only files whose real path contains this text"
    )
    parser.add_argument(
        "--sample-rate", type=int, default=16000, metavar="HZ", help="files at other rates are skipped (0: any)"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="threads reading audio headers (default: Python's choice)"
    )
    parser.set_defaults(func=_run_manifest)


def _add_labels(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("labels", help="NAME.wrd and NAME.ltr of a LibriSpeech manifest (libri_labels.py)")
    parser.add_argument("tsv", metavar="TSV", help="manifest whose audio lies beside its *.trans.txt files")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--output-name", required=True, metavar="NAME", help="output file name without extension, e.g. train"
    )
    parser.set_defaults(func=_run_labels)


def _add_dict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dict", help="dict.ltr.txt of label files (symbols by frequency)")
    parser.add_argument("labels", metavar="LTR", nargs="+", help="label files, e.g. train.ltr")
    parser.add_argument("--dest", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--name", default="dict.ltr.txt", metavar="FILE", help="output file name (default: dict.ltr.txt)"
    )
    parser.set_defaults(func=_run_dict)


def _add_librispeech(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("librispeech", help="all fine-tuning files of a LibriSpeech download")
    parser.add_argument(
        "--data-path", required=True, metavar="DIR", help="folder holding train-clean-100/, dev-clean/, ..."
    )
    parser.add_argument("--dest", metavar="DIR", help="output directory (default: DATA_PATH/manifest)")
    parser.add_argument(
        "--workers", type=int, metavar="N", help="threads reading audio headers (default: Python's choice)"
    )
    parser.set_defaults(func=_run_librispeech)


def _run_manifest(args: argparse.Namespace) -> int:
    summary = write_manifest(
        args.root,
        args.dest,
        ext=args.ext,
        valid_percent=args.valid_percent,
        seed=args.seed,
        path_must_contain=args.path_must_contain,
        workers=args.workers,
        sample_rate=args.sample_rate or None,
    )
    _report_skipped(summary.skipped)
    print(summary.line())
    return 0


def _run_labels(args: argparse.Namespace) -> int:
    print(write_labels(args.tsv, args.output_dir, args.output_name).line())
    return 0


def _run_dict(args: argparse.Namespace) -> int:
    print(write_dictionary(args.labels, args.dest, args.name).line())
    return 0


def _run_librispeech(args: argparse.Namespace) -> int:
    summary = prepare_librispeech(args.data_path, args.dest, workers=args.workers)
    _report_skipped(summary.skipped)
    print(summary.line())
    return 0


def _report_skipped(skipped: Sequence[SkippedFile]) -> None:
    """List the skipped files, one per line, so the user can fix or delete them."""
    for item in skipped:
        print(f"skipped {item.path}: {item.reason}")
