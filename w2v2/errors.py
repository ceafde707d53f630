"""The one exception type for bad user input; the command line prints it as a paragraph."""

from __future__ import annotations

import os
import sys
import traceback


class W2v2Error(Exception):
    """A problem with the user's files, configs or arguments, explained in one paragraph."""


def debugging(flag: bool = False) -> bool:
    """Whether tracebacks are wanted: `--debug` given, or `W2V2_DEBUG` set to anything but 0."""
    return flag or os.environ.get("W2V2_DEBUG", "0").strip() not in ("", "0")


def paragraph(error: BaseException) -> str:
    """The error's message on one line: a message that embeds another tool's text may span lines."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def report(prog: str, error: W2v2Error, debug: bool = False) -> int:
    """Print `prog: error: ...` (after the traceback when debugging) to stderr; returns the exit status 2."""
    if debugging(debug):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"{prog}: error: {paragraph(error)}", file=sys.stderr)
    return 2
