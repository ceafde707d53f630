"""The `w2v2` command: one sub-command per module listed in `COMMANDS`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from w2v2.errors import W2v2Error, report

DEBUG_HELP = "print the traceback of an error as well (or set W2V2_DEBUG=1)"
# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
COMMANDS = ("w2v2.cli.prepare", "w2v2.cli.features", "w2v2.cli.evaluate", "w2v2.cli.transcribe", "w2v2.cli.plot", "w2v2.cli.demo", "w2v2.cli.hf")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every `w2v2` sub-command."""
    parser = argparse.ArgumentParser(prog="w2v2", description="wav2vec 2.0 toolkit")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    for command in subparsers.choices.values():  # `w2v2 CMD --debug` as well as `w2v2 --debug CMD`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one sub-command; user errors print one paragraph (after their traceback with `--debug`) and exit
    with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except W2v2Error as error:
        return report(f"w2v2 {args.command}", error, args.debug)


if __name__ == "__main__":
    sys.exit(main())
