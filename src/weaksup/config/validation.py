"""Build-time validation of a composed config, before anything is loaded or trained.

The constructors are the schema: every node with a `_target_` is checked against the
signature of the class it builds (unknown keys, wrong types), plus a few value rules for
third-party classes whose constructors we do not own (optimizers, the Trainer). Our own
classes validate their values in `__init__` with messages that name the config key.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


class ConfigError(ValueError):
    """A config value that cannot work, reported with its full key."""


def _positive(value: Any) -> bool:
    return value > 0


def _non_negative(value: Any) -> bool:
    return value >= 0


def _unit_interval(value: Any) -> bool:
    return 0 <= value <= 1


# Value rules for keys of third-party constructors (torch optimizers, Lightning's Trainer).
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (_positive, "> 0"),
    "weight_decay": (_non_negative, ">= 0"),
    "momentum": (_unit_interval, "in [0, 1]"),
    "eps": (_positive, "> 0"),
    "accumulate_grad_batches": (_positive, ">= 1"),
    "gradient_clip_val": (_non_negative, ">= 0"),
    "log_every_n_steps": (_positive, ">= 1"),
}


def validate_config(cfg: DictConfig) -> None:
    """Check every `_target_` node of `cfg`; raise `ConfigError` naming the first bad key."""
    for path, node in _target_nodes(cfg, ""):
        _validate_target_node(node, path)


def _target_nodes(node: Any, path: str) -> Iterable[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if str(key) == "hydra":
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                yield from _target_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, child in enumerate(node._iter_ex(resolve=False)):
            yield from _target_nodes(child, f"{path}[{index}]")


@cache
def _signature_of(target: str) -> tuple[inspect.Signature, dict[str, Any]]:
    try:
        obj = get_object(target)
    except Exception as error:  # hydra wraps every import failure differently
        raise ConfigError(f"_target_ {target!r} cannot be imported: {error}") from None
    function = obj.__init__ if inspect.isclass(obj) else obj
    signature = inspect.signature(obj)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    return signature, hints


def _validate_target_node(node: DictConfig, path: str) -> None:
    target = node._get_node("_target_")._value()
    where = path or "<root>"
    signature, hints = _signature_of(str(target))
    parameters = signature.parameters
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    allowed = [
        name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    for key in node:
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        full_key = f"{path}.{key}" if path else key
        if key not in parameters and not takes_any_keyword:
            raise ConfigError(
                f"unknown key '{full_key}' for {target} ({where}); allowed keys: {', '.join(allowed)}"
            )
        try:
            value = node[key]
        except InterpolationResolutionError:
            continue  # e.g. ${hydra:...} outside a Hydra run: checked when it resolves
        if isinstance(value, DictConfig) and "_target_" in value:
            continue  # built by its own constructor, checked as its own node
        plain = (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, DictConfig | ListConfig)
            else value
        )
        if key in hints and not _matches(plain, hints[key]):
            raise ConfigError(
                f"'{full_key}' = {plain!r} has the wrong type for {target}: expected {_type_name(hints[key])}"
            )
        if key in VALUE_RULES and isinstance(plain, int | float) and not isinstance(plain, bool):
            rule, description = VALUE_RULES[key]
            if not rule(plain):
                raise ConfigError(f"'{full_key}' must be {description}, got {plain}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a plain config value can be passed where `annotation` is expected.

    Lenient where a config cannot express the type (tensors, modules, protocols): only the
    types a YAML value can have are checked.
    """
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in arguments)
    if origin is typing.Literal:
        return any(type(value) is type(choice) and value == choice for choice in arguments)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    container = origin or annotation
    if container in (list, tuple, Sequence, typing.Sequence, Iterable):
        if not isinstance(value, list | tuple):
            return False
        if container is tuple and arguments and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(_matches, value, arguments))
        item_type = arguments[0] if arguments else Any
        return all(_matches(item, item_type) for item in value)
    if container in (dict, Mapping, typing.Mapping):
        return isinstance(value, dict)
    # A class or protocol a YAML scalar cannot be: accept anything but clear scalar mismatches.
    if isinstance(value, bool | int | float | str) or value is None:
        try:
            return not inspect.isclass(container) or isinstance(value, container)
        except TypeError:  # a protocol that cannot be checked at run time
            return False
    return True
