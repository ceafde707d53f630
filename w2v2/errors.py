"""The exceptions the command line prints as one paragraph: bad user input, and faults of a run."""

from __future__ import annotations

import os
import sys
import traceback


class W2v2Error(Exception):
    """A problem with the user's files, configs or arguments, explained in one paragraph; exit status 2."""

    exit_status = 2


class RunFault(W2v2Error):
    """A fault of the run, not of its input (another rank died or hung), explained in one paragraph; exit
    status 1, what a launch with a crashed rank returns."""

    exit_status = 1


def debugging(flag: bool = False) -> bool:
    """Whether tracebacks are wanted: `--debug` given, or `W2V2_DEBUG` set to anything but 0."""
    return flag or os.environ.get("W2V2_DEBUG", "0").strip() not in ("", "0")


def paragraph(error: BaseException) -> str:
    """The error's message on one line: a message that embeds another tool's text may span lines."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def report(prog: str, error: W2v2Error, debug: bool = False) -> int:
    """Print `prog: error: ...` (after the traceback when debugging) to stderr; returns the error's exit status."""
    if debugging(debug):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"{prog}: error: {paragraph(error)}", file=sys.stderr)
    return error.exit_status
