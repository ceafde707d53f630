"""The one mechanism behind every config group: YAML files, overrides, saved `cfg`s and legacy `args`.

A group is a dataclass deriving from `Group`, with fairseq's field names and defaults. Each field
says what it does here through its metadata:
- a plain field changes behaviour as it does in fairseq;
- `no_effect(...)` fields are accepted because fairseq writes them, change nothing here, and are
  reported once when set to another value than the default (`ineffective_settings`);
- `default_only(...)` fields are accepted at their default and refused otherwise, with the reason;
- `linked(path)` fields are fairseq's `${group.key}` links: left unset (None), they take that value.
Old names of fields go in `LEGACY` (renamed or dropped). `build_groups` turns a tree of plain dicts
into group objects: unknown keys are errors naming the key (or dropped, for files of other fairseq
versions), types are checked by OmegaConf, `${...}` interpolations resolved, links filled, and each
group's own `check` run.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from w2v2.errors import W2v2Error

MISSING = "???"  # OmegaConf's marker of a required value
USED, NO_EFFECT, DEFAULT_ONLY = "used", "no_effect", "default_only"
# A registry entry: one schema, or the schemas a group's `_name` chooses between.
Schema = Union[Type["Group"], Mapping[str, Type["Group"]]]
G = TypeVar("G", bound="Group")


def _field(default: Any, metadata: Dict[str, Any]) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def no_effect(default: Any = None, link: Optional[str] = None) -> Any:
    """A field fairseq writes that changes nothing here; a non-default value is reported once."""
    return _field(default, {"effect": NO_EFFECT, "link": link})


def default_only(default: Any, reason: str) -> Any:
    """A field accepted only at its default; any other value is refused with `reason`."""
    return _field(default, {"effect": DEFAULT_ONLY, "reason": reason})


def linked(path: str, default: Any = None) -> Any:
    """fairseq's `${path}` link: the field takes the value at `path` (e.g. `optimization.lr`) when unset."""
    return _field(default, {"link": path})


def effect(item: dataclasses.Field) -> str:
    """USED, NO_EFFECT or DEFAULT_ONLY for a field of a Group."""
    return item.metadata.get("effect", USED)


@dataclass
class Group:
    """Base of every config group."""

    LEGACY: ClassVar[Mapping[str, Optional[str]]] = {}  # keys of older fairseq versions -> new name, or None

    @classmethod
    def keys(cls) -> List[str]:
        """Every key the group accepts (fields and legacy names)."""
        return [f.name for f in dataclasses.fields(cls)] + list(cls.LEGACY)

    @classmethod
    def from_dict(cls: Type[G], values: Mapping[str, Any], where: str = "model", strict: bool = True) -> G:
        """This group from a plain dict: unknown keys are errors naming `where.key` (dropped if not strict)."""
        return build_group(cls, values, where, strict)  # type: ignore[return-value]

    @classmethod
    def prepare(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """Turn fairseq's spellings of values into this schema's types, before types are checked."""
        return values

    def check(self, where: str) -> None:
        """Check values beyond their types; raises W2v2Error naming `where.key`."""

    def to_dict(self) -> Dict[str, Any]:
        """The plain dict fairseq stores for this group (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def require(condition: bool, where: str, message: str) -> None:
    """Raise "`where` message" unless `condition` holds."""
    if not condition:
        raise W2v2Error(f"`{where}` {message}")


def at_least(value: float, minimum: float, where: str) -> None:
    """Refuse `value` < `minimum`, naming the key."""
    require(value >= minimum, where, f"must be >= {minimum}, but is {value} instead.")


def one_of(value: Any, choices: Sequence[Any], where: str) -> None:
    """Refuse a value outside `choices`, naming the key and the choices."""
    shown = ", ".join("null" if c is None else str(c) for c in choices)
    require(value in choices, where, f"must be one of {shown}, but is {value!r} instead.")


def suggest(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """" Did you mean `prefix.close`?" for the closest of `choices`, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean `{prefix + '.' if prefix else ''}{close[0]}`?" if close else ""


def schema_of(group: str, name: Optional[str], registry: Mapping[str, Schema]) -> Type[Group]:
    """The schema of `group` (chosen by `_name` = `name` where the group has several)."""
    entry = registry[group]
    if isinstance(entry, type):
        return entry
    if not isinstance(name, str) or name not in entry:  # a list or mapping there is not hashable
        raise W2v2Error(f"`{group}._name` must be one of {', '.join(entry)}, but is {name!r} instead."
                        f"{suggest(str(name), list(entry))}")
    return entry[name]


def build_groups(tree: Mapping[str, Any], registry: Mapping[str, Schema], strict: bool = True,
                 source: str = "the config") -> Dict[str, Group]:
    """Group objects for the groups of `tree` that `registry` knows (others are errors, or dropped
    when not `strict`), plus a default object for each absent group with a fixed schema."""
    tree = copy.deepcopy(dict(tree))
    root = OmegaConf.create({})
    for group, values in tree.items():
        if group not in registry:
            if strict:
                raise W2v2Error(f"`{group}` is not a config group.{suggest(group, list(registry))}")
            continue
        root[group] = _node(group, values, registry, strict)
    for group, entry in registry.items():
        if group not in root and isinstance(entry, type):
            root[group] = OmegaConf.structured(entry)
    _check_missing(root, _marked_missing(tree), source)
    for group in root:
        _link(root, group)
    groups = {group: _to_object(root, group) for group in root}
    for group, obj in groups.items():
        _check_default_only(obj, group)
        obj.check(group)
    return groups


def build_group(schema: Type[Group], values: Mapping[str, Any], where: str, strict: bool = True) -> Group:
    """One group from its values (links to other groups stay unset)."""
    return build_groups({where: dict(values)}, {where: schema}, strict)[where]


def ineffective_settings(groups: Mapping[str, Group]) -> List[str]:
    """`group.key = value` for every no-effect field set to another value than its default."""
    found = []
    for group, obj in groups.items():
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name)
            if effect(item) == NO_EFFECT and not item.metadata.get("link") and value != default_of(item):
                found.append(f"{group}.{item.name} = {value!r}")
    return found


def groups_from_flat(values: Mapping[str, Any], schemas: Mapping[str, Type[Group]]) -> Dict[str, Dict[str, Any]]:
    """Split a pre-2021 flat `args` namespace into groups: each group takes the keys its schema has."""
    return {group: {k: values[k] for k in schema.keys() if k in values} for group, schema in schemas.items()}


def _node(group: str, values: Any, registry: Mapping[str, Schema], strict: bool) -> DictConfig:
    """The group's values merged onto its schema (types checked) as an OmegaConf node."""
    if not isinstance(values, Mapping):
        raise W2v2Error(f"`{group}` must be a mapping of keys, but is {values!r} instead.")
    values = dict(values)
    if isinstance(registry[group], type):
        values.pop("_name", None)  # fairseq writes `_name: null` into groups that have one schema
    schema = schema_of(group, values.get("_name"), registry)
    for old, new in schema.LEGACY.items():
        if old in values:
            value = values.pop(old)
            if new is not None:
                values.setdefault(new, value)
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = [k for k in values if k not in names]
    if unknown and strict:
        name = values.get("_name")
        raise W2v2Error(f"`{group}.{unknown[0]}` is not a key of the `{group}` group{f' ({name})' if name else ''}."
                        f"{suggest(unknown[0], names, group)}")
    values = schema.prepare(_lists_for_scalars(schema, {k: v for k, v in values.items() if k in names}))
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except ValidationError as error:
        raise _type_error(group, schema, values, error.full_key or error.key) from error
    except OmegaConfBaseException as error:  # a mapping for a list, an interpolation a list cannot hold: no key
        raise _type_error(group, schema, values, _key_at_fault(schema, values)) from error


def _key_at_fault(schema: type, values: Mapping[str, Any]) -> str:
    """The first key of `values` that does not merge onto `schema` alone."""
    for key, value in values.items():
        try:
            OmegaConf.merge(OmegaConf.structured(schema), {key: value})
        except OmegaConfBaseException:
            return key
    return next(iter(values), "")


def _lists_for_scalars(schema: type, values: Dict[str, Any]) -> Dict[str, Any]:
    """fairseq accepts `lr: 0.001` for a list field, and pre-2021 `args` hold tuples as strings such as
    "(2,0.5,0.999995)"; so do we."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        if not _is_sequence_type(hints[key]):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = [value]
        elif isinstance(value, str) and value.strip().startswith("("):
            try:
                values[key] = list(ast.literal_eval(value))
            except (SyntaxError, ValueError, TypeError):
                pass  # left as it is, the type check names the key
    return values


def _is_sequence_type(hint: Any) -> bool:
    if typing.get_origin(hint) is Union:
        return any(_is_sequence_type(arg) for arg in typing.get_args(hint))
    return typing.get_origin(hint) in (list, tuple)


def _to_object(root: DictConfig, group: str) -> Group:
    try:
        return OmegaConf.to_object(root[group])
    except OmegaConfBaseException as error:
        raise _unresolvable(error, group) from error


def _link(root: DictConfig, group: str) -> None:
    """Unset linked fields become fairseq's `${path}` interpolations (OmegaConf converts the type)."""
    node = root[group]
    for item in dataclasses.fields(OmegaConf.get_type(node)):
        path = item.metadata.get("link")
        if path and node[item.name] is None and path.split(".")[0] in root:
            node[item.name] = "${" + path + "}"


def _check_default_only(obj: Group, group: str) -> None:
    for item in dataclasses.fields(obj):
        default = default_of(item)
        if effect(item) == DEFAULT_ONLY and getattr(obj, item.name) != default:
            require(False, f"{group}.{item.name}", f"is not supported ({item.metadata['reason']}); it must be "
                    f"{json.dumps(default)}, but is {json.dumps(getattr(obj, item.name))} instead.")


def default_of(item: dataclasses.Field) -> Any:
    """A field's default value."""
    return item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default


def _type_error(group: str, schema: type, values: Mapping[str, Any], where: Any) -> W2v2Error:
    """The error for the key that OmegaConf names in `where` (`group.key[i]` and the like)."""
    key = str(where).split(".")[-1].split("[")[0]
    hint = typing.get_type_hints(schema).get(key)
    return W2v2Error(f"`{group}.{key}` must be {_describe(hint)}, but is {values.get(key)!r} instead.")


def _describe(hint: Any) -> str:
    """Words for a type hint: `Optional[List[float]]` -> 'a list of numbers or null'."""
    if typing.get_origin(hint) is Union:
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return " or ".join(_describe(arg) for arg in inner) + " or null"
    if typing.get_origin(hint) in (list, tuple):
        return "a list of " + _describe(typing.get_args(hint)[0]).split(" ", 1)[1] + "s"
    words = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}
    return words.get(hint, "a value of type " + getattr(hint, "__name__", str(hint)))


def _marked_missing(tree: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Keys whose value is `???` (merging onto a schema default would hide them)."""
    keys = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            keys += _marked_missing(value, f"{prefix}{key}.")
        elif isinstance(value, str) and value == MISSING:
            keys.append(f"{prefix}{key}")
    return keys


def _check_missing(root: DictConfig, marked: List[str], source: str) -> None:
    """Name every required value not given: `???` in the tree, or a schema field without default."""
    try:
        missing = sorted(set(marked) | OmegaConf.missing_keys(root))
    except OmegaConfBaseException as error:  # it resolves interpolations on the way
        raise _unresolvable(error, "the config") from error
    if missing:
        keys = ", ".join(f"`{k}`" for k in missing)
        example = " ".join(f"{k}=..." for k in missing)
        one = len(missing) == 1
        raise W2v2Error(f"{keys} {'is' if one else 'are'} required (`???` in {source}) but not given; "
                        f"pass {'it' if one else 'them'} on the command line, e.g. `{example}`.")


def _unresolvable(error: OmegaConfBaseException, where: str) -> W2v2Error:
    key = f"`{error.full_key}`" if error.full_key else where
    return W2v2Error(f"{key} could not be resolved: {str(error).splitlines()[0]}.")

