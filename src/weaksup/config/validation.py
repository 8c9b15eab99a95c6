"""Build-time validation of a composed config, before anything is loaded or trained.

The constructors are the schema: every node with a `_target_` is checked against the
signature of the class it builds (unknown keys, wrong types), plus a few value rules for
third-party classes whose constructors we do not own (optimizers, the Trainer). Our own
classes validate their values in `__init__` with messages that name the config key.
"""

from __future__ import annotations

import difflib
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


# NumPy seeds (hence Lightning's `seed_everything` and our samplers) are unsigned 32-bit integers.
SEED_LIMIT = 2**32


def validate_config(cfg: DictConfig) -> None:
    """Check the run's `seed` and every `_target_` node of `cfg`; raise `ConfigError` naming the first bad key."""
    _validate_seed(cfg)
    for path, node in _target_nodes(cfg, ""):
        _validate_target_node(node, path)


def _validate_seed(cfg: DictConfig) -> None:
    """The top-level `seed` first: the data nodes interpolate it and would report it as theirs."""
    if "_target_" in cfg or "seed" not in cfg:
        return
    try:
        seed = cfg.seed
    except InterpolationResolutionError:
        return  # checked when it resolves
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT):
        raise ConfigError(f"'seed' must be an integer from 0 to {SEED_LIMIT - 1}, got {seed!r}")


def unknown_key_error(node: DictConfig, path: str, key: str) -> ConfigError:
    """The error for `key` set in the config node at `path`: close matches first, then every allowed key.

    A `_target_` node allows its constructor's arguments; any other node the keys it holds.
    """
    full_key = f"{path}.{key}" if path else key
    if "_target_" in node:
        target = str(node._get_node("_target_")._value())
        allowed, takes_any_keyword = _constructor_keys(target)
        if key in allowed:  # only Hydra refuses it: the option file does not set this argument
            return ConfigError(
                f"'{full_key}' is an argument of {target} that {path or 'the config'} does not "
                f"set; add it with a leading +: +{full_key}=..."
            )
        message = f"unknown key '{full_key}' for {target} ({path or '<root>'})"
    else:
        allowed, takes_any_keyword = [str(name) for name in node], True
        message = f"unknown key '{full_key}' in {path or 'the top-level config'}"
    close_matches = difflib.get_close_matches(key, allowed, n=3, cutoff=0.75)
    if close_matches:
        return ConfigError(
            f"{message}; did you mean {_join_or(close_matches)}? Allowed keys: {', '.join(allowed)}"
        )
    message += f"; allowed keys: {', '.join(allowed)}"
    if takes_any_keyword:  # a new entry may be intended (a callback, a logger): say how
        message += f"; to add a new key, use +{full_key}=..."
    return ConfigError(message)


def check_added_top_level_keys(
    overrides: Iterable[tuple[str, str]], allowed: Sequence[str]
) -> None:
    """Refuse `+key=...` / `++key=...` that add a top-level key the config does not have.

    `overrides` are `(key, override as typed)`; `allowed` the config's top-level keys and
    config groups. Hydra accepts such a key and nothing reads it: `+hparams_search=optuna`
    would run one plain job, `+num_thread=1` change nothing.
    """
    for key, override in overrides:
        if key in allowed:
            continue
        message = f"unknown top-level key '{key}' ({override}): nothing reads it"
        close_matches = difflib.get_close_matches(key, allowed, n=3, cutoff=0.75)
        message += f"; did you mean {_join_or(close_matches)}?" if close_matches else "."
        raise ConfigError(f"{message} Top-level keys and config groups: {', '.join(allowed)}")


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


def _join_or(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _constructor_keys(target: str) -> tuple[list[str], bool]:
    """The keyword arguments `target` accepts by name, and whether it takes any keyword (`**kwargs`)."""
    parameters = _signature_of(target)[0].parameters.values()
    named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


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
    _, hints = _signature_of(str(target))
    allowed, takes_any_keyword = _constructor_keys(str(target))
    for key in node:
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        full_key = f"{path}.{key}" if path else key
        if key not in allowed and not takes_any_keyword:
            raise unknown_key_error(node, path, key)
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
                f"'{full_key}' = {plain!r} has the wrong type for {target}: expected {_expected(hints[key])}"
            )
        if key in VALUE_RULES and isinstance(plain, int | float) and not isinstance(plain, bool):
            rule, description = VALUE_RULES[key]
            if not rule(plain):
                raise ConfigError(f"'{full_key}' must be {description}, got {plain}")


def _expected(annotation: Any) -> str:
    """What a value of `annotation` may be, in words: `int or None`, `one of 64, 32, '16-mixed' or None`."""
    members = _union_members(annotation)
    choices = [
        repr(choice)
        for member in members
        if typing.get_origin(member) is typing.Literal
        for choice in typing.get_args(member)
    ]
    others = [_type_name(m) for m in members if typing.get_origin(m) is not typing.Literal]
    return _join_or(([f"one of {', '.join(choices)}"] if choices else []) + others)


def _union_members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for member in typing.get_args(annotation) for m in _union_members(member)]
    return [annotation]


def _type_name(annotation: Any) -> str:
    """A short name: `None`, `int`, `list[int]`, `Iterable[Logger]` (no module paths)."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Ellipsis:
        return "..."
    if isinstance(annotation, list):  # the argument types of a Callable[[...], ...]
        return f"[{', '.join(map(_type_name, annotation))}]"
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(map(repr, arguments))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(map(_type_name, arguments))
    if origin is not None and arguments:
        origin_name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{origin_name}[{', '.join(_type_name(argument) for argument in arguments)}]"
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
