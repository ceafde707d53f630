"""Compose a training config as `fairseq-hydra-train --config-dir D --config-name N k=v ...` does.

A YAML file (fairseq's format, `# @package _group_`, `???` for required values) is read, Hydra
override strings are applied with fairseq's rules, and every group is validated against its
schema (`w2v2.train.config`, `w2v2.models.config`). Override grammar is Hydra's own parser; the
rules match fairseq: `common`, `checkpoint`, `dataset`, `distributed_training` and
`optimization` are typed, so `key=value` may set any of their fields; `model`, `task`,
`criterion`, `optimizer` and `lr_scheduler` hold only the keys their YAML lists, so a key the
YAML leaves out needs `+key=value`; `~key` removes a key; `hydra.*` overrides are collected.

Without `--config-dir`, names are looked up among the recipes shipped inside the package
(`w2v2/configs/{pretraining,finetuning}/`, package data), so a non-editable install finds them;
`examples/wav2vec/config/...` in the repository links to those same files.
"""

from __future__ import annotations

import datetime
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from w2v2.errors import W2v2Error
from w2v2.schema import build_groups, schema_of, suggest
from w2v2.train.config import EXTRA_GROUPS, REGISTRY, FinetuningConfig, PretrainingConfig, assemble

RECIPE_KINDS = ("pretraining", "finetuning")
# fairseq-hydra-train runs under Hydra 1.0, whose default run directory is this.
DEFAULT_RUN_DIR = "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"


@dataclass
class LoadedConfig:
    """What `load_train_config` returns."""

    cfg: Union[PretrainingConfig, FinetuningConfig]  # the validated config
    run_dir: str  # hydra.run.dir, resolved: fairseq-hydra-train runs (and saves save_dir) there
    config_path: str  # the YAML file that was read
    hydra: Dict[str, Any] = field(default_factory=dict)  # every hydra.* value from the YAML and the overrides


def load_train_config(config_dir: Optional[str], config_name: str, overrides: Sequence[str] = ()) -> LoadedConfig:
    """Read `config_name` from `config_dir` (None: the bundled recipes), apply overrides, validate."""
    path, text = find_config(config_dir, config_name)
    tree, hydra = _parse_yaml(text, path)
    label = os.path.basename(path)
    hydra = OmegaConf.to_container(OmegaConf.merge(hydra, apply_overrides(tree, overrides, label)), resolve=False)
    cfg = validate_train_config(tree, source=label)
    return LoadedConfig(cfg=cfg, run_dir=_run_dir(hydra), config_path=path, hydra=hydra)


def bundled_config_names() -> List[str]:
    """Names of the recipes shipped with the package, e.g. `base_100h`."""
    root = importlib.resources.files("w2v2") / "configs"
    names = []
    for kind in RECIPE_KINDS:
        folder = root / kind
        if folder.is_dir():
            names += [entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return sorted(names)


def find_config(config_dir: Optional[str], config_name: str) -> Tuple[str, str]:
    """The path and text of the YAML named `config_name` (`.yaml` optional)."""
    name = config_name if config_name.endswith((".yaml", ".yml")) else config_name + ".yaml"
    if config_dir is None:
        root = importlib.resources.files("w2v2") / "configs"
        for candidate in [root / name] + [root / kind / name for kind in RECIPE_KINDS]:
            if candidate.is_file():
                return str(candidate), candidate.read_text(encoding="utf-8")
        names = bundled_config_names()
        raise W2v2Error(f"`--config-name` {config_name!r} is not a bundled recipe.{suggest(config_name, names)} "
                        f"Bundled: {', '.join(names)}; or pass --config-dir.")
    folder = os.path.expanduser(config_dir)
    if not os.path.isdir(folder):
        raise W2v2Error(f"`--config-dir` must be a directory, but {config_dir!r} is not one.")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        present = [f.rsplit(".", 1)[0] for f in os.listdir(folder) if f.endswith((".yaml", ".yml"))]
        hint = suggest(config_name, present)
        raise W2v2Error(f"`--config-name` {config_name!r}: there is no {name} in {config_dir}.{hint}")
    with open(path, encoding="utf-8") as handle:
        return path, handle.read()


def apply_overrides(tree: Dict[str, Any], overrides: Sequence[str], source: str = "the YAML") -> Dict[str, Any]:
    """Apply Hydra override strings to `tree` in place, with fairseq's rules; return the hydra.* ones."""
    hydra: Dict[str, Any] = {}
    for text in overrides:
        override = _parse_override(text)
        key, path = override.key_or_group, override.key_or_group.split(".")
        if path[0] == "hydra":
            _override_hydra(hydra, override, path[1:])
        elif override.type == OverrideType.DEL:
            if not _delete(tree, path):
                raise W2v2Error(f"`~{key}` removes a key, but `{key}` is not in the config.")
        elif override.type == OverrideType.ADD and _has(tree, path):
            raise W2v2Error(f"`+{key}` adds a key, but `{key}` is already in the config; set it with `{key}=...`.")
        else:
            if override.type == OverrideType.CHANGE and not _has(tree, path):
                _check_settable(tree, path, source)
            _set(tree, path, override.value())
    return hydra


def validate_train_config(tree: Mapping[str, Any], strict: bool = True,
                          source: str = "the config") -> Union[PretrainingConfig, FinetuningConfig]:
    """Build the config from a plain nested dict (a YAML tree or a checkpoint's `cfg`).

    With `strict=False` (for configs saved by other fairseq versions) unknown keys and groups are
    dropped instead of being errors.
    """
    tree = {k: v for k, v in tree.items() if k != "_name"}
    extra = {g: tree.pop(g) for g in list(tree) if g in EXTRA_GROUPS}  # kept as given
    return assemble(build_groups(tree, REGISTRY, strict, source), extra)


def group_keys(group: str, name: Optional[str] = None) -> List[str]:
    """The keys group `group` accepts (for a group with several schemas, the one `_name` = `name` picks)."""
    entry = REGISTRY.get(group)
    if entry is None or (not isinstance(entry, type) and name not in entry):
        return []
    return schema_of(group, name, REGISTRY).keys()


def _parse_yaml(text: str, path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The config tree and its `hydra:` section, `???` kept as the string."""
    try:
        conf = OmegaConf.create(text)
    except Exception as error:  # the YAML parser raises several types
        raise W2v2Error(f"{path} is not valid YAML: {error}") from error
    if not isinstance(conf, DictConfig):
        raise W2v2Error(f"{path} must be a mapping of config groups (common:, task:, ...), but is a list.")
    tree = OmegaConf.to_container(conf, resolve=False)
    if "defaults" in tree:
        raise W2v2Error(f"`defaults` in {path}: Hydra defaults lists (config groups) are not supported; "
                        "write the groups into the file itself.")
    return tree, tree.pop("hydra", None) or {}


def _parse_override(text: str) -> Override:
    try:
        override = OverridesParser.create().parse_overrides([text])[0]
    except HydraException as error:
        key, _, value = text.partition("=")
        # Hydra's grammar has no tuples; fairseq's adam_betas=(0.9,0.98) is meant as a string.
        if re.fullmatch(r"\(.*\)", value.strip()):
            return _parse_override(f"{key}='{value.strip()}'")
        raise W2v2Error(f"the override {text!r} is not of the form key=value, +key=value or ~key: {error}") from error
    if override.is_sweep_override() or override.package is not None:
        raise W2v2Error(f"the override {text!r} is a sweep or package override; only single values are supported.")
    return override


def _override_hydra(hydra: Dict[str, Any], override: Override, path: List[str]) -> None:
    """Collect a hydra.* override as given; only `hydra.run.dir` means something here."""
    if not path:
        raise W2v2Error(f"the override {override.input_line!r} needs a hydra key, e.g. `hydra.run.dir=...`.")
    if override.type == OverrideType.DEL:
        _delete(hydra, path)
    else:
        _set(hydra, path, override.value())


def _check_settable(tree: Dict[str, Any], path: List[str], source: str) -> None:
    """Refuse `key=value` for a key the config lacks, as fairseq does, saying what to write instead."""
    group, key = path[0], ".".join(path)
    if isinstance(REGISTRY.get(group), type):
        if len(path) == 2 and path[1] in group_keys(group):
            return
        raise W2v2Error(f"`{key}` is not a key of the `{group}` group.{suggest(path[-1], group_keys(group), group)}")
    if group in EXTRA_GROUPS:
        return
    if group not in REGISTRY:
        raise W2v2Error(f"`{group}` is not a config group.{suggest(group, list(REGISTRY) + list(EXTRA_GROUPS))}")
    name = tree.get(group, {}).get("_name") if isinstance(tree.get(group), dict) else None
    keys = group_keys(group, name)
    if len(path) == 2 and path[1] in keys:
        raise W2v2Error(f"`{key}` is not in {source}, so it must be added with `+{key}=...`: like fairseq-hydra-train, "
                        f"the model, task, criterion, optimizer and lr_scheduler groups hold only the keys their YAML "
                        f"lists, although `{path[1]}` is a valid {name} field.")
    raise W2v2Error(f"`{key}` is not a key of the `{group}` group{f' ({name})' if name else ''}."
                    f"{suggest(path[-1], keys, group)}")


def _run_dir(hydra: Mapping[str, Any]) -> str:
    """hydra.run.dir with `${now:...}` filled in, as Hydra would at start-up."""
    text = str(hydra.get("run", {}).get("dir") or DEFAULT_RUN_DIR)
    now = datetime.datetime.now()
    return re.sub(r"\$\{now:([^}]*)\}", lambda match: now.strftime(match.group(1)), text)


def _has(tree: Mapping[str, Any], path: List[str]) -> bool:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return False
        tree = tree[key]
    return True


def _set(tree: Dict[str, Any], path: List[str], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[path[-1]] = value


def _delete(tree: Dict[str, Any], path: List[str]) -> bool:
    if not _has(tree, path):
        return False
    for key in path[:-1]:
        tree = tree[key]
    del tree[path[-1]]
    return True
