"""Check that each test `tests/config_key_table.py` names fails when its key is ignored.

    python -m tests.key_mutations [KEY ...]

For each key, every read of that field of its schema returns the field's default, as if no code
looked at the key, and the named test runs (pytest, in this process); it must fail, by an assertion,
an error or by running past `LIMIT` seconds (an ignored `max_epoch` trains for ever). Prints one line
per key and exits non-zero when some named test still passes.
`tests/test_config_keys.py` runs it as a slow test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from typing import Iterator, List, Sequence

import pytest
from omegaconf import OmegaConf

from tests.config_key_table import PENDING, USED_KEY_TESTS
from w2v2 import schema as schema_module
from w2v2.schema import default_of
from w2v2.train.config import REGISTRY

LIMIT = 60  # seconds; each named test takes a few when its key is read


@contextlib.contextmanager
def ignored(key: str) -> Iterator[None]:
    """While active, the field `key` (`group.key` or `group.<_name>.key`) always reads as its default, and
    so do the fields linked to it (fairseq's `${group.key}`: a link is a read of the key)."""
    parts = key.split(".")
    entry = REGISTRY[parts[0]]
    schema = entry if isinstance(entry, type) else entry[parts[1]]
    item = next(f for f in dataclasses.fields(schema) if f.name == parts[-1])
    original, link = schema.__getattribute__, schema_module._link

    def read(self, name):
        if name == item.name and type(self) is schema:  # subclasses keep their own value
            return default_of(item)
        return original(self, name)

    def link_to_default(root, group):
        node = root[group]
        for linked in dataclasses.fields(OmegaConf.get_type(node)):
            path = linked.metadata.get("link", "").split(".")
            if path[0] == parts[0] and path[-1] == parts[-1] and node[linked.name] is None:
                node[linked.name] = default_of(item)
        link(root, group)

    schema.__getattribute__, schema_module._link = read, link_to_default
    try:
        yield
    finally:
        schema.__getattribute__, schema_module._link = original, link


def surviving(keys: Sequence[str]) -> List[str]:
    """The keys whose named test passes although the key is ignored."""
    def overran(signum, frame):
        raise TimeoutError(f"still running after {LIMIT} s")

    survivors = []
    previous = signal.signal(signal.SIGALRM, overran)
    try:
        for key in keys:
            began = time.monotonic()
            with ignored(key):
                signal.alarm(LIMIT)
                try:
                    code = pytest.main(["-x", "-p", "no:terminal", "-p", "no:cacheprovider", USED_KEY_TESTS[key]])
                finally:
                    signal.alarm(0)
            caught = code == pytest.ExitCode.TESTS_FAILED
            print(f"{'caught' if caught else 'SURVIVED'} {key} ({USED_KEY_TESTS[key]}, "
                  f"{time.monotonic() - began:.0f} s)", flush=True)
            if not caught:
                survivors.append(key)
    finally:
        signal.signal(signal.SIGALRM, previous)
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
