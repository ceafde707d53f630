"""Writing files so that a failure or a kill never leaves a half-written file where a good one stood."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Iterator, List, Mapping, Union

from w2v2.errors import W2v2Error

PathLike = Union[str, os.PathLike]
TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The hidden temporary file a write of `path` goes through (one per process, so ranks never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def remove_stale_temp_files(folder: Path) -> List[Path]:
    """Delete the `temp_path` files in `folder` whose writer is gone (killed, or its disk filled up);
    returns them. A file of a live process other than this one is left alone: it may be writing."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = re.fullmatch(rf"\..+\.(\d+){re.escape(TEMP_SUFFIX)}", path.name)
        if match and path.is_file() and not _other_live_process(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _other_live_process(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a process writes nothing before it starts, so a file with its pid is an older one's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` (text mode: UTF-8, `\\n` lines); rename it onto `path` when the
    block ends without error, remove it otherwise. An OSError becomes a W2v2Error naming `path`."""
    path = Path(path)
    tmp = temp_path(path)
    text = "b" not in mode
    try:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": "\n"} if text else {})) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as error:
        raise W2v2Error(f"cannot write {path}: {error.strerror or error}.") from error
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: PathLike, text: str) -> None:
    """`text` into `path` through `atomic_write`."""
    with atomic_write(path) as handle:
        handle.write(text)


def write_texts_atomically(outputs: Mapping[Path, str]) -> None:
    """Write every text, then rename them all: a failure while writing leaves none of them changed."""
    with contextlib.ExitStack() as stack:
        for path, text in outputs.items():
            stack.enter_context(atomic_write(path)).write(text)
