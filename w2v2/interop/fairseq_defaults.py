"""fairseq's default config groups, filled into the `cfg` of every checkpoint we write.

fairseq's loader reads fields of groups it stores as dataclasses (`generation.print_alignment`,
`task.eval_wer_config.print_alignment`, the same inside `model.w2v_args`, ...), so a checkpoint it
can load holds each of them as a full dict. `fairseq_defaults.json` holds fairseq 0.12.2's defaults
(made with fairseq itself by tests/oracle/make_fairseq_defaults.py).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

DEFAULTS_FILE = Path(__file__).with_name("fairseq_defaults.json")
Link = Tuple[Tuple[str, ...], str]  # (path of a filled field, the path its `${...}` default points to)
ABSENT = object()  # marks a key that `cfg` does not have (a None there is a value of its own)
REQUIRED = "???"  # fairseq's mark of a field with no default; written as "" when we have no value


@lru_cache(maxsize=1)
def fairseq_defaults() -> Dict[str, Any]:
    """The parsed `fairseq_defaults.json`: `groups`, `untyped_groups` and `named_groups` (by `_name`)."""
    return json.loads(DEFAULTS_FILE.read_text())


def complete_cfg(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """`cfg` with every group and field that fairseq stores filled in with fairseq's defaults.

    Our own values win; a missing field, and a None where fairseq keeps a dataclass, take fairseq's
    default. A named group (task, criterion, ...) is completed from the defaults of its `_name`; one
    whose name fairseq's table lacks stays as it is. `model.w2v_args`, a whole config of its own
    (the pretraining run's), is completed the same way.
    """
    defaults = fairseq_defaults()
    result: Dict[str, Any] = {"_name": None, **copy.deepcopy(dict(cfg))}
    links: List[Link] = []
    for group, values in defaults["groups"].items():
        result[group] = _merge(values, result.get(group, ABSENT), (group,), links)
    for group in defaults["untyped_groups"]:
        result.setdefault(group, None)
    for group, by_name in defaults["named_groups"].items():
        value = result.get(group)
        if isinstance(value, dict) and value.get("_name") in by_name:
            result[group] = _merge(by_name[value["_name"]], value, (group,), links)
    for path, target in links:
        _set(result, path, _lookup(result, target))
    model = result.get("model")
    if isinstance(model, dict) and isinstance(model.get("w2v_args"), Mapping):
        model["w2v_args"] = complete_cfg(model["w2v_args"])
    return result


def _merge(default: Any, ours: Any, path: Tuple[str, ...], links: List[Link]) -> Any:
    """`ours` (ABSENT if the key is not there) over `default`; `${...}` defaults taken go to `links`."""
    if isinstance(default, dict):
        if ours is None or ours is ABSENT:
            ours = {}
        if not isinstance(ours, Mapping):
            return ours
        merged = {key: _merge(value, ours.get(key, ABSENT), path + (key,), links) for key, value in default.items()}
        merged.update({key: value for key, value in ours.items() if key not in default})
        return merged
    if default == REQUIRED and (ours is None or ours is ABSENT):
        # fairseq's str fields without a default (`task.data`, `model.w2v_path`) take no None, and its
        # loader sets `w2v_args.task.data` and applies a `data` override only where the key exists
        return ""
    if ours is not ABSENT:
        return ours
    target = _link(default)
    if target is not None:
        links.append((path, target))
        return None
    return copy.deepcopy(default)


def _link(value: Any) -> Optional[str]:
    """The path a `${a.b}` interpolation points to, else None."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return None


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    """A copy of the value at `dotted` in `cfg`, or ABSENT (e.g. `task.data` of a bare model's file)."""
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return ABSENT
        node = node[key]
    return copy.deepcopy(node)


def _set(cfg: Dict[str, Any], path: Tuple[str, ...], value: Any) -> None:
    """Set the field at `path`; ABSENT removes it (a link to an unset field stays unset, as in fairseq)."""
    for key in path[:-1]:
        cfg = cfg[key]
    if value is ABSENT:
        del cfg[path[-1]]
    else:
        cfg[path[-1]] = value
