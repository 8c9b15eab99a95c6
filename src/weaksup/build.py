"""Turn a composed config into the objects of a run: datamodule, method, callbacks, loggers, trainer."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from importlib import resources
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from weaksup.checkpoints import AtomicCheckpointIO
from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.base import WeakSupMethod


def group_options(group: str) -> dict[str, DictConfig]:
    """The options of a config group as shipped in `weaksup.conf` (name -> its YAML).

    An option that extends another option of its group (`defaults: [other]`) is merged onto
    it, so every option shows its `_target_`.
    """
    folder = resources.files("weaksup.conf") / group
    raw = {
        entry.name.removesuffix(".yaml"): OmegaConf.create(entry.read_text())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }

    def merged(name: str) -> DictConfig:
        option = raw[name]
        bases = [
            base for base in option.get("defaults", []) if isinstance(base, str) and base in raw
        ]
        own = OmegaConf.masked_copy(option, [key for key in option if key != "defaults"])
        return OmegaConf.merge(*(merged(base) for base in bases), own) if bases else own

    return {name: merged(name) for name in raw}


def _kind_name(kind: type) -> str:
    return kind.__name__


def compatible_options(group: str, required_base: type, attribute: str | None = None) -> list[str]:
    """Options of `group` whose class (or its `attribute`) is a subclass of `required_base`."""
    names = []
    for name, option in group_options(group).items():
        if "_target_" not in option:
            continue
        kind = get_class(option._target_)
        kind = getattr(kind, attribute, object) if attribute else kind
        if inspect.isclass(kind) and issubclass(kind, required_base):
            names.append(name)
    return names


def check_compatibility(cfg: DictConfig) -> None:
    """Method, data and loss must fit together: one clear sentence naming the options if not."""
    check_batch_kinds(cfg)
    check_loss_kind(cfg)


def check_loss_kind(cfg: DictConfig) -> None:
    method_cls = get_class(cfg.method._target_)
    required = getattr(method_cls, "loss_kind", None)
    if required is None or cfg.get("loss") is None:
        return
    loss_cls = get_class(cfg.loss._target_)
    if not issubclass(loss_cls, required):
        raise ConfigError(
            f"method {method_cls.__name__} needs a loss of kind {required.__name__}, but loss "
            f"{loss_cls.__name__} is not one; choose loss= one of: "
            f"{', '.join(compatible_options('loss', required)) or '(none shipped)'}"
        )


def check_batch_kinds(cfg: DictConfig) -> None:
    """The method must consume the batch kind the datamodule emits: one clear sentence if not."""
    method_cls = get_class(cfg.method._target_)
    data_cls = get_class(cfg.data._target_)
    consumes = getattr(method_cls, "consumes", None)
    emits = getattr(data_cls, "batch_kind", None)
    if consumes is None or emits is None or issubclass(emits, consumes):
        return
    fitting = compatible_options("data", consumes, attribute="batch_kind")
    raise ConfigError(
        f"method {method_cls.__name__} consumes {_kind_name(consumes)} batches but data "
        f"{data_cls.__name__} emits {_kind_name(emits)} batches; choose a data option that emits "
        f"{_kind_name(consumes)}: {', '.join(fitting) or '(none shipped)'}"
    )


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    return build_node(cfg.data)


def build_method(cfg: DictConfig, data: DataMetadata) -> WeakSupMethod:
    method_cls = get_class(cfg.method._target_)
    if not (inspect.isclass(method_cls) and issubclass(method_cls, WeakSupMethod)):
        raise ConfigError(f"method._target_ {cfg.method._target_!r} is not a weaksup method class")
    method = method_cls.from_config(cfg, data)
    method.run_config = cfg_without_hydra(cfg)
    method.data_metadata = data
    return method


def cfg_without_hydra(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config as plain values (what checkpoints store)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def instantiate_named(nodes: DictConfig | None) -> list[Any]:
    """Instantiate a dict of named configs (callbacks, loggers); `null` entries are switched off."""
    if not nodes:
        return []
    return [build_node(node) for node in nodes.values() if node is not None]


def build_trainer(
    cfg: DictConfig, callbacks: Iterable[pl.Callback], loggers: list[Any]
) -> pl.Trainer:
    """The Trainer of `cfg.trainer`, saving and loading checkpoints through `AtomicCheckpointIO`."""
    plugins = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    return build_node(cfg.trainer, callbacks=list(callbacks), logger=loggers or False, **plugins)
