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
from weaksup.data.batches import SemiSupervisedBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.base import WeakSupMethod
from weaksup.methods.manual import GRADIENT_CLIP_ALGORITHMS, ManualOptimizationMethod


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


def emitted_batch_kinds(data_cls: type) -> tuple[type, ...]:
    """Every batch kind a datamodule class can emit (`batch_kinds`, else its one `batch_kind`)."""
    kinds = getattr(data_cls, "batch_kinds", ())
    if kinds:
        return tuple(kinds)
    kind = getattr(data_cls, "batch_kind", None)
    return () if kind is None else (kind,)


def compatible_options(group: str, required_base: type, attribute: str | None = None) -> list[str]:
    """Options of `group` whose class (or its `attribute`) is a subclass of `required_base`.

    `attribute="batch_kind"` asks which data options can emit `required_base`: every kind of
    `emitted_batch_kinds` counts, so a datamodule with a semi-supervised mode is listed too.
    """
    names = []
    for name, option in group_options(group).items():
        if "_target_" not in option:
            continue
        option_cls = get_class(option._target_)
        if attribute == "batch_kind":
            kinds = emitted_batch_kinds(option_cls)
        else:
            kinds = (getattr(option_cls, attribute, object) if attribute else option_cls,)
        if any(inspect.isclass(kind) and issubclass(kind, required_base) for kind in kinds):
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
    """The method must consume a batch kind the datamodule can emit: one clear sentence if not.

    A method that consumes `SemiSupervisedBatch` also needs `data.num_labeled` (the rest of
    the training split is its unlabeled data); both are checked before any data loads.
    """
    method_cls = get_class(cfg.method._target_)
    data_cls = get_class(cfg.data._target_)
    consumes = getattr(method_cls, "consumes", None)
    emits = emitted_batch_kinds(data_cls)
    if "semi_supervised" in cfg.data:
        raise ConfigError(
            "data.semi_supervised is not a config key: the method decides it (a method that "
            "consumes SemiSupervisedBatch gets semi-supervised batches); remove it"
        )
    if consumes is None or not emits:
        return
    if not any(issubclass(kind, consumes) for kind in emits):
        fitting = compatible_options("data", consumes, attribute="batch_kind")
        default_kind = getattr(data_cls, "batch_kind", emits[0])
        raise ConfigError(
            f"method {method_cls.__name__} consumes {_kind_name(consumes)} batches but data "
            f"{data_cls.__name__} emits {_kind_name(default_kind)} batches; choose a data option "
            f"that emits {_kind_name(consumes)}: {', '.join(fitting) or '(none shipped)'}"
        )
    if issubclass(consumes, SemiSupervisedBatch) and cfg.data.get("num_labeled") is None:
        raise ConfigError(
            f"method {method_cls.__name__} learns from labeled + unlabeled data: set "
            "data.num_labeled=N (e.g. 50)"
        )


def consumes_semi_supervised(cfg: DictConfig) -> bool:
    """Whether the configured method trains on `SemiSupervisedBatch`es."""
    consumes = getattr(get_class(cfg.method._target_), "consumes", None)
    return inspect.isclass(consumes) and issubclass(consumes, SemiSupervisedBatch)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The datamodule of `cfg.data`; semi-supervised (`semi_supervised=True`) when the method
    consumes `SemiSupervisedBatch` (`check_batch_kinds` has made sure the data can)."""
    if consumes_semi_supervised(cfg):
        return build_node(cfg.data, semi_supervised=True)
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
    cfg: DictConfig,
    callbacks: Iterable[pl.Callback],
    loggers: list[Any],
    method: WeakSupMethod | None = None,
) -> pl.Trainer:
    """The Trainer of `cfg.trainer`, saving and loading checkpoints through `AtomicCheckpointIO`.

    `method`: the method this Trainer will fit. One that steps its optimizers itself
    (`automatic_optimization=False`) gets `trainer.gradient_clip_val` and
    `trainer.gradient_clip_algorithm` (Lightning refuses both on the Trainer for such methods
    and tells them to clip themselves, which `ManualOptimizationMethod` does), and
    `trainer.accumulate_grad_batches` must be 1.
    """
    plugins = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    manual = {} if method is None else _hand_clipping_to_manual_method(cfg.trainer, method)
    return build_node(
        cfg.trainer, callbacks=list(callbacks), logger=loggers or False, **plugins, **manual
    )


def _hand_clipping_to_manual_method(trainer: DictConfig, method: WeakSupMethod) -> dict[str, Any]:
    """Move the clipping settings from the Trainer to a manual-optimisation method.

    Returns the Trainer arguments that replace them (none: the method clips).
    """
    if method.automatic_optimization:
        return {}
    name = type(method).__name__
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if accumulate != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} cannot be used with method {name}: "
            "it steps its optimizers itself (manual optimisation); set "
            "trainer.accumulate_grad_batches=1 (a larger data.batch_size does the same)"
        )
    clip_val = trainer.get("gradient_clip_val")
    algorithm = trainer.get("gradient_clip_algorithm") or "norm"
    if algorithm not in GRADIENT_CLIP_ALGORITHMS:
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={algorithm!r} is not one of: "
            f"{', '.join(GRADIENT_CLIP_ALGORITHMS)}"
        )
    if not isinstance(method, ManualOptimizationMethod):
        if clip_val:
            raise ConfigError(
                f"trainer.gradient_clip_val={clip_val} cannot be used with method {name}: it "
                "steps its optimizers itself and does not clip; set trainer.gradient_clip_val=null"
            )
    else:
        method.gradient_clip_val = clip_val
        method.gradient_clip_algorithm = algorithm
    return {"gradient_clip_val": None, "gradient_clip_algorithm": None}
