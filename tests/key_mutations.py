"""Check that each test `tests/config_key_table.py` names fails when its key is ignored.

    python -m tests.key_mutations [KEY ...]

For each key, every read of that field of its schema returns the field's default, as if no code
looked at the key, and the named test runs (pytest, in this process); it must fail, by an assertion
or by an error. Prints one line per key and exits non-zero when some named test still passes.
`tests/test_config_keys.py` runs it as a slow test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Iterator, List, Sequence

import pytest

from tests.config_key_table import PENDING, USED_KEY_TESTS
from w2v2.schema import default_of
from w2v2.train.config import REGISTRY


@contextlib.contextmanager
def ignored(key: str) -> Iterator[None]:
    """While active, the field `key` (`group.key` or `group.<_name>.key`) always reads as its default."""
    parts = key.split(".")
    entry = REGISTRY[parts[0]]
    schema = entry if isinstance(entry, type) else entry[parts[1]]
    item = next(f for f in dataclasses.fields(schema) if f.name == parts[-1])
    original = schema.__getattribute__

    def read(self, name):
        if name == item.name and type(self) is schema:  # subclasses keep their own value
            return default_of(item)
        return original(self, name)

    schema.__getattribute__ = read
    try:
        yield
    finally:
        schema.__getattribute__ = original


def surviving(keys: Sequence[str]) -> List[str]:
    """The keys whose named test passes although the key is ignored."""
    survivors = []
    for key in keys:
        with ignored(key):
            code = pytest.main(["-x", "-p", "no:terminal", "-p", "no:cacheprovider", USED_KEY_TESTS[key]])
        caught = code == pytest.ExitCode.TESTS_FAILED
        print(f"{'caught' if caught else 'SURVIVED'} {key} ({USED_KEY_TESTS[key]})", flush=True)
        if not caught:
            survivors.append(key)
    return survivors


def main(argv: Sequence[str]) -> int:
    """Run the check for the given keys (default: every key with a named test); 1 if some survived."""
    # task.data has no default (`???`): ignoring it cannot give a config to run at all
    keys = list(argv) or [k for k, test in USED_KEY_TESTS.items() if test != PENDING and not k.endswith(".data")]
    survivors = surviving(keys)
    print(f"{len(keys) - len(survivors)} of {len(keys)} named tests fail when their key is ignored")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
