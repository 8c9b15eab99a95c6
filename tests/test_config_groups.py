"""Every option of every config group composes, validates and builds.

Parametrised from the shipped config tree itself: a new option is tested without editing
this file. Options that need another method, data kind or loss kind get the first fitting
partner option, found the same way `weaksup.build` names them in its errors.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from weaksup.build import (
    build_method,
    build_trainer,
    check_compatibility,
    compatible_options,
    group_options,
    instantiate_named,
)
from weaksup.config.validation import validate_config
from weaksup.data.batches import SemiSupervisedBatch

from conftest import ComposeFn

# Groups whose options are composed and built here; `hydra` and `paths` are exercised by every run.
GROUPS = (
    "data",
    "backbone",
    "method",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "experiment",
    "pooling",
)
GPU_TRAINERS = {"gpu", "ddp"}


def _options() -> list[tuple[str, str]]:
    root = resources.files("weaksup.conf")
    pairs = []
    for group in GROUPS:
        folder = root / group
        if folder.is_dir():
            pairs += [
                (group, entry.name.removesuffix(".yaml"))
                for entry in folder.iterdir()
                if entry.name.endswith(".yaml")
            ]
    return sorted(pairs)


def _first_method_for_data(batch_kind: type) -> str:
    for name, option in group_options("method").items():
        if issubclass(batch_kind, get_class(option._target_).consumes):
            return name
    raise AssertionError(f"no method option consumes {batch_kind.__name__}")


def _partner_overrides(group: str, option: str) -> list[str]:
    """Overrides that make `group=option` a coherent run (matching method, data and loss)."""
    if group not in ("method", "data", "loss", "pooling"):
        return []
    if group == "pooling":
        method = next(
            (
                n
                for n, o in group_options("method").items()
                if "pooling" in inspect.signature(get_class(o._target_)).parameters
            ),
            None,
        )
        if method is None:
            return []
        return [f"method={method}", *_partner_overrides("method", method)]
    if group == "loss":
        loss_cls = get_class(group_options("loss")[option]._target_)
        method = next(
            n
            for n, o in group_options("method").items()
            if (kind := get_class(o._target_).loss_kind) is not None and issubclass(loss_cls, kind)
        )
        overrides = [f"method={method}"]
    elif group == "data":
        kind = get_class(group_options("data")[option]._target_).batch_kind
        method = _first_method_for_data(kind)
        overrides = [f"method={method}"]
        if option == "mil_csv":  # a user's own CSV: here one the mil package ships
            overrides.append("data.source.mil_dataset=musk1")
    else:
        method = option
        overrides = []
    method_cls = get_class(group_options("method")[method]._target_)
    if group != "data":
        fitting_data = compatible_options("data", method_cls.consumes, attribute="batch_kind")
        preferred = [d for d in ("two_moons", "mil_gaussian", "partial_blobs") if d in fitting_data]
        overrides.append(f"data={(preferred or fitting_data)[0]}")
    if issubclass(method_cls.consumes, SemiSupervisedBatch):
        overrides.append("data.num_labeled=20")  # labeled + unlabeled: the rest unlabeled
    if group != "loss" and method_cls.loss_kind is not None:
        overrides.append(f"loss={compatible_options('loss', method_cls.loss_kind)[0]}")
    return overrides


def _compose_option(compose_train: ComposeFn, group: str, option: str) -> DictConfig:
    selection = f"{group}={option}"
    overrides = [*_partner_overrides(group, option), selection]
    if group == "experiment":
        # experiment=mil_csv is the template for a user's own CSV: here one the mil package ships
        extra = ["data.source.mil_dataset=musk1"] if option == "mil_csv" else []
        return compose_train(selection, *extra)
    return compose_train(*overrides)


def _build_datamodule_or_skip(cfg: DictConfig):
    datamodule = instantiate(cfg.data)
    try:
        return datamodule, datamodule.metadata
    except FileNotFoundError as missing:
        pytest.skip(f"data files not installed here: {str(missing).splitlines()[0]}")


@pytest.mark.parametrize(("group", "option"), _options(), ids=lambda value: str(value))
def test_option_composes_and_builds(
    compose_train: ComposeFn, group: str, option: str, tmp_path: Path
) -> None:
    cfg = _compose_option(compose_train, group, option)
    validate_config(cfg)
    check_compatibility(cfg)

    if group == "backbone":
        network = instantiate(cfg.backbone, input_shape=[1, 28, 28], num_outputs=3)
        assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
        return
    if group in ("optimizer", "scheduler"):
        parameters = [torch.nn.Parameter(torch.zeros(3))]
        optimizer = instantiate(cfg.optimizer, params=parameters)
        if cfg.get("scheduler") is not None:
            instantiate(cfg.scheduler, optimizer=optimizer)
        return

    _datamodule, metadata = _build_datamodule_or_skip(cfg)
    assert metadata.num_classes >= 2 and metadata.num_train > 0
    model = build_method(cfg, metadata)
    assert sum(p.numel() for p in model.parameters()) > 0
    if group in ("trainer", "callbacks", "logger", "debug", "experiment"):
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            pytest.skip(f"trainer={option} needs a CUDA device (composed and validated only)")
        trainer = build_trainer(
            cfg, instantiate_named(cfg.get("callbacks")), instantiate_named(cfg.get("logger"))
        )
        assert trainer.max_epochs == cfg.trainer.max_epochs


def test_every_group_folder_is_covered() -> None:
    """A new group folder must be added to GROUPS (or deliberately left to the run tests)."""
    root = resources.files("weaksup.conf")
    folders = {
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("_")
    }
    # augment: pulled in by the methods that use it (tests/augment/test_config.py composes each
    # option with method=smpl); hparams_search: sweeper settings (tests/test_sweeps.py).
    assert folders - set(GROUPS) <= {"hydra", "paths", "__pycache__", "augment", "hparams_search"}
