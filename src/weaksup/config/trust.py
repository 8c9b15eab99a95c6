"""Which classes a checkpoint may ask for: only those the shipped config tree names.

A checkpoint is data. `weaksup-eval` and `weaksup-predict` rebuild data and model from the
run config stored inside it, and Hydra's `instantiate` calls whatever a `_target_` names
(even `get_class` imports the module it names). `torch.load(weights_only=True)` stops pickled
code, not a config such as `{_target_: torch.load, f: ..., weights_only: false}` stored as
plain values. So before anything is imported or built, every node of a stored config is
checked against the shipped tree (`weaksup.conf`, i.e. `conf/` in the repository):

* every `_target_` must be one some shipped YAML file names (any group, any depth,
  experiments included); a class of one's own becomes trusted by adding a config file for
  it under `conf/<group>/`;
* Hydra's other instantiation keys (`_args_`, `_partial_`, `_recursive_`, `_convert_`) only
  where the shipped tree uses that key somewhere (today it uses none: its files mirror
  constructors, keyword arguments only). weaksup-train never stores them, and each changes how
  a trusted target is called: positional arguments that no key names, a partial in place of
  the object, raw config dicts handed to constructors that expect built objects;
* no `${...}` interpolation: a stored config is resolved before it is saved, so one there was
  put by hand, and resolvers can read environment variables;
* only plain config values (dicts with scalar keys, lists, strings, numbers, booleans, null).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from weaksup.checkpoints import CheckpointError
from weaksup.config.validation import HYDRA_KEYS

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

CONFIG_PACKAGE = "weaksup.conf"
INSTANTIATION_KEYS = HYDRA_KEYS - {"_target_"}
PLAIN_SCALARS = (str, int, float, bool, type(None))


class UntrustedCheckpointError(CheckpointError):
    """A stored run config that asks for something the shipped config tree cannot produce."""


@dataclass(frozen=True)
class ShippedTree:
    """What the shipped config files use: their `_target_`s and Hydra instantiation keys."""

    targets: frozenset[str]
    instantiation_keys: frozenset[str]


def _yaml_files(folder: Traversable) -> Iterator[Traversable]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _yaml_files(entry)
        elif entry.name.endswith(".yaml"):
            yield entry


def _plain_nodes(node: Any) -> Iterator[dict[Any, Any]]:
    """Every dict in a plain container, the container itself included."""
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _plain_nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _plain_nodes(child)


@cache
def shipped_tree() -> ShippedTree:
    """The `_target_`s and instantiation keys of every YAML file under `weaksup.conf`."""
    targets: set[str] = set()
    keys: set[str] = set()
    for entry in _yaml_files(resources.files(CONFIG_PACKAGE)):
        content = OmegaConf.to_container(OmegaConf.create(entry.read_text()), resolve=False)
        for node in _plain_nodes(content):
            if isinstance(node.get("_target_"), str):
                targets.add(node["_target_"])
            keys.update(key for key in node if key in INSTANTIATION_KEYS)
    return ShippedTree(frozenset(targets), frozenset(keys))


def shipped_targets() -> frozenset[str]:
    """The `_target_` strings the shipped config tree names (what a checkpoint may rebuild)."""
    return shipped_tree().targets


# Classes that moved since checkpoints were first written: old name -> the name the tree ships.
MOVED_TARGETS: dict[str, str] = {
    "weaksup.methods.minmax.LinearEncoder": "weaksup.nn.LinearEncoder",
}


def with_moved_targets(node: Any) -> Any:
    """A copy of a stored plain config with the `_target_` of moved classes renamed."""
    if isinstance(node, dict):
        return {
            key: MOVED_TARGETS.get(value, value)
            if key == "_target_" and isinstance(value, str)
            else with_moved_targets(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [with_moved_targets(item) for item in node]
    return node


def check_stored_config(config: Any, checkpoint: str | Path) -> None:
    """Raise `UntrustedCheckpointError` naming the node unless `config` is rebuildable safely.

    Runs on the plain stored container, before anything is imported or instantiated.
    """
    tree = shipped_tree()
    if not isinstance(config, dict):
        raise UntrustedCheckpointError(
            f"checkpoint {checkpoint} stores a run config of type {type(config).__name__}, "
            "not a dict"
        )
    _check_node(config, "", tree, str(checkpoint))


def _child_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_node(node: Any, path: str, tree: ShippedTree, checkpoint: str) -> None:
    where = path or "<root>"
    if isinstance(node, dict):
        _check_mapping(node, where, tree, checkpoint)
        for key, child in node.items():
            _check_node(child, _child_path(path, key), tree, checkpoint)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_node(child, f"{path}[{index}]", tree, checkpoint)
    elif not isinstance(node, PLAIN_SCALARS):
        raise UntrustedCheckpointError(
            f"checkpoint {checkpoint}: stored config node {where} holds a "
            f"{type(node).__name__}, not a plain config value"
        )
    elif isinstance(node, str) and "${" in node:
        raise UntrustedCheckpointError(
            f"checkpoint {checkpoint}: stored config node {where} = {node!r} is an "
            "interpolation; weaksup-train stores resolved configs, so a `${...}` there was "
            "put by hand, and it is not resolved (resolvers can read environment variables)"
        )


def _check_mapping(node: dict[Any, Any], where: str, tree: ShippedTree, checkpoint: str) -> None:
    target = node.get("_target_")
    if "_target_" in node and not (isinstance(target, str) and target in tree.targets):
        raise UntrustedCheckpointError(
            f"checkpoint {checkpoint}: stored config node {where} has _target_ "
            f"{target!r}, which no shipped config file names; only the targets the "
            f"shipped config tree ({CONFIG_PACKAGE}, conf/ in the repository) names are "
            "rebuilt from a checkpoint, so that a checkpoint cannot run code of its own. To "
            "trust a class of your own, add a config file for it under conf/<group>/ (e.g. "
            "conf/backbone/<name>.yaml with its _target_)"
        )
    for key in node:
        if isinstance(key, bool | int | float) or key in tree.instantiation_keys:
            continue
        if not isinstance(key, str):
            raise UntrustedCheckpointError(
                f"checkpoint {checkpoint}: stored config node {where} has a key {key!r} of "
                f"type {type(key).__name__}, not a plain config key"
            )
        if key in INSTANTIATION_KEYS:
            raise UntrustedCheckpointError(
                f"checkpoint {checkpoint}: stored config node {where} uses {key}, which no "
                "config file of the shipped tree uses; weaksup-train never stores it, so the "
                "checkpoint was edited (it would change how a trusted target is called)"
            )
