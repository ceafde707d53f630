"""Development tool, run with the fairseq oracle's python, never by CI: run a fairseq script (e.g.
../shared/oracle/fairseq_outputs.py or fairseq's infer.py) and record every path of a checkpoint's
`cfg` that fairseq's code reads while it runs, as JSON lines {"path", "found"} appended to OUT.

    /tmp/fairseq-oracle/python tests/oracle/trace_cfg_reads.py OUT.jsonl SCRIPT.py [ARGS...]

Paths are counted from the checkpoint's cfg root; a group that fairseq merges with its dataclass
(task, model) keeps the path it came from, so `model.w2v_args.task.normalize` is one path.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from typing import Optional

from omegaconf import DictConfig

CHECKPOINT_ROOTS: dict = {}  # id(cfg root, or group merged with its dataclass) -> its path in the cfg
READS: dict = {}  # path -> found (True if any read found a value there)
FAIRSEQ_CODE = os.sep + "fairseq" + os.sep, os.sep + "examples" + os.sep


def record(node: DictConfig, key: object, found: bool) -> None:
    """Note a read of `key` under `node` if it comes from fairseq's code and lands in a checkpoint cfg."""
    caller = sys._getframe(2).f_code.co_filename
    if not any(part in caller for part in FAIRSEQ_CODE) or not isinstance(key, str):
        return
    prefix = path_of(node)
    if prefix is not None:
        path = f"{prefix}.{key}" if prefix else key
        READS[path] = READS.get(path, False) or found


def path_of(node: DictConfig) -> Optional[str]:
    """The path of `node` inside a checkpoint's cfg, or None if it is not part of one."""
    keys = []
    while id(node) not in CHECKPOINT_ROOTS:
        parent = node._get_parent()
        if parent is None:
            return None
        keys.append(str(node._key()))
        node = parent
    return ".".join(p for p in (CHECKPOINT_ROOTS[id(node)], *reversed(keys)) if p)


def wrap(name: str) -> None:
    """Record the reads that DictConfig's method `name` makes."""
    original = getattr(DictConfig, name)

    def traced(self, key, *args):
        try:
            value = original(self, key, *args)
        except Exception:
            record(self, key, False)
            raise
        record(self, key, value is not False if name == "__contains__" else key in self.keys())
        return value

    setattr(DictConfig, name, traced)


def install() -> None:
    """Hook DictConfig's reads, checkpoint loading and the merges of groups with their dataclasses."""
    for name in ("__getattr__", "__getitem__", "get", "__contains__"):
        wrap(name)
    import fairseq.checkpoint_utils as cu
    import fairseq.models as models
    import fairseq.tasks as tasks

    upgrade = cu._upgrade_state_dict

    def traced_upgrade(state):
        # called by load_checkpoint_to_cpu once `cfg` is a DictConfig, before fairseq reads anything of it
        if state.get("cfg") is not None:
            CHECKPOINT_ROOTS[id(state["cfg"])] = ""
        return upgrade(state)

    cu._upgrade_state_dict = traced_upgrade
    for module in (tasks, models):
        merge = module.merge_with_parent

        def traced_merge(dc, cfg, *args, _merge=merge, **kwargs):
            prefix = path_of(cfg) if isinstance(cfg, DictConfig) else None
            merged = _merge(dc, cfg, *args, **kwargs)
            if prefix is not None:
                CHECKPOINT_ROOTS[id(merged)] = prefix
            return merged

        module.merge_with_parent = traced_merge


def main() -> None:
    """Trace the script named on the command line."""
    out, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    install()
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        with open(out, "a") as handle:
            for path, found in sorted(READS.items()):
                handle.write(json.dumps({"path": path, "found": found}) + "\n")


if __name__ == "__main__":
    main()
