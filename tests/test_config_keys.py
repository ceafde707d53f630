"""Every key of every config group does what fairseq's does, is refused with a message, or is reported.

The keys are enumerated from `w2v2.train.config.REGISTRY`, so a field added to a schema is covered (or
this file fails) without anyone remembering to list it. A key is named `group.key` for a group with one
schema and `group.<_name>.key` for a group whose `_name` picks the schema (`model.wav2vec_ctc.mask_prob`).
- no-effect keys: a non-default value is accepted and reported by `ineffective_settings`;
- default-only keys: a non-default value is refused with a message naming the key;
- linked keys (fairseq's `${group.key}`): the target exists and its value is taken;
- used keys: `USED_KEY_TESTS` names the test that fails if the key were ignored, and that test exists.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Type, Union

import pytest

from tests.config_key_table import FINDINGS, PENDING, PENDING_KEYS, USED_KEY_TESTS
from w2v2.errors import W2v2Error
from w2v2.schema import DEFAULT_ONLY, NO_EFFECT, USED, Group, build_groups, default_of, effect, ineffective_settings
from w2v2.train.config import REGISTRY


class Key(NamedTuple):
    """One field of one schema of the registry."""

    group: str
    name: Optional[str]  # the `_name` that picks the schema, for groups with several
    schema: Type[Group]
    item: dataclasses.Field

    @property
    def id(self) -> str:
        return ".".join(part for part in (self.group, self.name, self.item.name) if part)

    @property
    def effect(self) -> str:
        return effect(self.item)

    @property
    def link(self) -> Optional[str]:
        return self.item.metadata.get("link")


def all_keys() -> List[Key]:
    """Every field of every schema in the registry, `_name` excepted."""
    keys = []
    for group, entry in REGISTRY.items():
        schemas = {None: entry} if isinstance(entry, type) else entry
        for name, schema in schemas.items():
            keys += [Key(group, name, schema, item) for item in dataclasses.fields(schema) if item.name != "_name"]
    return keys


KEYS = all_keys()
# The least a config needs to validate (fixed groups are always built), and what some schemas need.
ALWAYS: Dict[str, Dict[str, Any]] = {"dataset": {"max_tokens": 1000}, "optimization": {"max_update": 10}}
NEEDS: Dict[str, Dict[str, Any]] = {
    "task": {"data": "/data"},
    "criterion.wav2vec": {"infonce": True},
    "lr_scheduler.tri_stage": {"decay_steps": 5},
}
# Values of the right type that a schema's own check accepts, where "default plus something" would not.
VALID_VALUES = {"distributed_training.ddp_backend": "legacy_ddp"}


def add_group(tree: Dict[str, Dict[str, Any]], group: str, name: Optional[str]) -> Dict[str, Any]:
    """`tree[group]` with what schema `name` of `group` needs to validate."""
    section = tree.setdefault(group, {})
    if name is not None:
        section.setdefault("_name", name)
        for need in (NEEDS.get(group, {}), NEEDS.get(f"{group}.{name}", {})):
            for k, v in need.items():
                section.setdefault(k, v)
    return section


def tree_for(group: str, name: Optional[str], values: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A config tree that validates, with `values` set in `group` (schema `name`)."""
    tree = {g: dict(v) for g, v in ALWAYS.items()}
    add_group(tree, group, name).update(values)
    return tree


def other_value(hint: Any, current: Any) -> Any:
    """A value of type `hint` that differs from `current`: bools flipped, numbers changed, text added."""
    if typing.get_origin(hint) is Union:
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return other_value(inner[0], current)
    if typing.get_origin(hint) is list:
        return [other_value(typing.get_args(hint)[0], item) for item in current or [0]]
    if hint is bool:
        return not current
    if hint in (int, float):
        return (current if current is not None else 0) + (1 if hint is int else 0.5)
    return f"{current}_x" if current else "x"  # str, and `Any` fields that hold text


def non_default(key: Key) -> Any:
    """A non-default value for `key` that its group's checks accept."""
    if key.id in VALID_VALUES:
        return VALID_VALUES[key.id]
    hint = typing.get_type_hints(key.schema)[key.item.name]
    base = tree_for(key.group, key.name, {}).get(key.group, {})
    return other_value(hint, base.get(key.item.name, default_of(key.item)))


def by_effect(kind: str, linked: Optional[bool] = None) -> List[Any]:
    """pytest params of the keys of one kind (with or without a link), named by their id."""
    chosen = [k for k in KEYS if k.effect == kind and (linked is None or bool(k.link) == linked)]
    return [pytest.param(k, id=k.id) for k in chosen]


def test_the_base_trees_validate_and_report_nothing():
    for group, name in sorted({(k.group, k.name or "") for k in KEYS}):
        assert ineffective_settings(build_groups(tree_for(group, name or None, {}), REGISTRY)) == [], (group, name)


@pytest.mark.parametrize("key", by_effect(NO_EFFECT, linked=False))
def test_no_effect_key_is_accepted_and_reported(key):
    value = non_default(key)
    groups = build_groups(tree_for(key.group, key.name, {key.item.name: value}), REGISTRY)
    shown = getattr(groups[key.group], key.item.name)
    assert shown == value
    assert ineffective_settings(groups) == [f"{key.group}.{key.item.name} = {shown!r}"]


@pytest.mark.parametrize("key", by_effect(DEFAULT_ONLY))
def test_default_only_key_is_refused_when_changed(key):
    with pytest.raises(W2v2Error) as caught:
        build_groups(tree_for(key.group, key.name, {key.item.name: non_default(key)}), REGISTRY)
    assert f"`{key.group}.{key.item.name}` is not supported" in str(caught.value)


def target_of(key: Key) -> List[Key]:
    """The fields a link points at: one per schema of the target group."""
    group, name = key.link.split(".")
    return [k for k in KEYS if k.group == group and k.item.name == name]


@pytest.mark.parametrize("key", [p for kind in (NO_EFFECT, USED) for p in by_effect(kind, linked=True)])
def test_linked_key_takes_its_targets_value(key):
    targets = target_of(key)
    group, name = key.link.split(".")
    schemas = REGISTRY[group] if isinstance(REGISTRY[group], dict) else {None: REGISTRY[group]}
    assert targets and len(targets) == len(schemas), f"`{key.link}` is not a key of every `{group}` schema"
    target = targets[0]
    # A default-only target cannot be changed: then the link must still fill in its default.
    value = default_of(target.item) if target.effect == DEFAULT_ONLY else non_default(target)
    assert value is not None
    tree = tree_for(key.group, key.name, {})
    add_group(tree, group, target.name)[name] = value
    assert getattr(build_groups(tree, REGISTRY)[key.group], key.item.name) == value
    explicit = non_default(key)
    tree[key.group][key.item.name] = explicit  # a value set on the key itself wins over the link
    assert getattr(build_groups(tree, REGISTRY)[key.group], key.item.name) == explicit


def param_ids(function: Any) -> List[str]:
    """The ids pytest gives the cases of a parametrised test (explicit ids, pytest.param ids, str values)."""
    ids: List[str] = []
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        given = mark.kwargs.get("ids") or (mark.args[2] if len(mark.args) > 2 else None)
        values = mark.kwargs.get("argvalues", mark.args[1] if len(mark.args) > 1 else [])
        if given:
            ids += [str(i) for i in given]
            continue
        for value in values:
            if getattr(value, "id", None):
                ids.append(value.id)
            else:
                first = getattr(value, "values", value)
                first = first[0] if isinstance(first, tuple) else first
                if isinstance(first, str):
                    ids.append(first)
    return ids


def resolve(pointer: str) -> Any:
    """The test function `tests/path.py::test_name[id]` names; fails the test if it does not exist."""
    path, _, rest = pointer.partition("::")
    name, _, case = rest.partition("[")
    assert path.startswith("tests/") and path.endswith(".py") and name.startswith("test_"), pointer
    module = importlib.import_module(path[: -len(".py")].replace("/", "."))
    function = getattr(module, name, None)
    assert callable(function), f"{pointer}: {path} has no function {name}"
    if case:
        assert case[:-1] in param_ids(function), f"{pointer}: {name} has no case {case[:-1]!r}"
    return function


USED_IDS = sorted(k.id for k in KEYS if k.effect == USED)


def test_every_used_key_has_a_test_and_no_entry_is_stale():
    missing = [key for key in USED_IDS if key not in USED_KEY_TESTS and key not in FINDINGS]
    stale = [key for key in list(USED_KEY_TESTS) + list(FINDINGS) if key not in USED_IDS]
    assert not missing, f"used keys without a test in tests/config_key_table.py: {missing}"
    assert not stale, f"entries for keys that are not used keys (any more): {stale}"
    assert not set(USED_KEY_TESTS) & set(FINDINGS), "a key is both tested and listed as a finding"


def test_pending_is_only_for_the_keys_being_implemented():
    pending = sorted(key for key, test in USED_KEY_TESTS.items() if test == PENDING)
    assert pending == sorted(PENDING_KEYS)


@pytest.mark.parametrize("key", [key for key in USED_IDS if USED_KEY_TESTS.get(key, PENDING) != PENDING])
def test_the_named_test_exists(key):
    resolve(USED_KEY_TESTS[key])


@pytest.mark.slow
def test_each_named_test_fails_when_its_key_is_ignored():
    done = subprocess.run([sys.executable, "-m", "tests.key_mutations"], capture_output=True, text=True, timeout=1500,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, "\n".join(line for line in done.stdout.splitlines() if "SURVIVED" in line)
