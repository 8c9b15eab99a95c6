"""`weaksup-eval ckpt_path=...`: rebuild data and model from a checkpoint alone and test it.

The checkpoint carries the resolved run config and the data metadata (plain values, so it
loads under `torch.load(weights_only=True)`), hence no other argument is needed. A checkpoint
is data: its config is rebuilt only when every `_target_` in it is one the shipped config
tree names (`weaksup.config.trust`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import weaksup.quiet  # noqa: F401  (drops third-party chatter; before any Trainer)
from weaksup.build import build_datamodule, build_method, build_trainer, instantiate_named
from weaksup.checkpoints import CheckpointError, read_checkpoint
from weaksup.cli import hydra_entry_point
from weaksup.config.trust import check_stored_config, with_moved_targets
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.base import CHECKPOINT_KEY
from weaksup.progress import progress_callbacks
from weaksup.results import print_results, scalar_metrics, write_metrics
from weaksup.run_logging import start_wandb_runs

# Types of the stored `DataMetadata` fields (plain values: `to_dict` stores the shape as a list).
METADATA_TYPES = {"name": str, "num_classes": int, "num_train": int, "input_shape": list}


def required_checkpoint(cfg: DictConfig, command: str) -> Path:
    """`cfg.ckpt_path`, which `weaksup-eval` and `weaksup-predict` cannot run without."""
    usage = f"{command} ckpt_path=<run folder>/checkpoints/<file>.ckpt"
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(f"ckpt_path is required: {usage}")
    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(cfg.ckpt_path)!r} is not a file: {usage}")
    return path


# Parts of a stored run config that evaluation and prediction take from their own config.
RUN_ONLY_KEYS = frozenset({"callbacks", "logger", "trainer", "hydra"})


def load_checkpoint(ckpt_path: str | Path) -> tuple[DictConfig, DataMetadata, dict[str, Tensor]]:
    """The run config, data metadata and model weights stored in a weaksup checkpoint.

    The checkpoint is untrusted data: it is read with `weights_only=True`, and its stored
    config may name only what the shipped config tree names (`weaksup.config.trust`),
    checked here before anything it names is imported or built.
    """
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(stored, dict) or stored.get("config") is None:
        raise CheckpointError(
            f"{path} holds no weaksup run config (was it written by weaksup-train?)"
        )
    if not isinstance(stored["config"], dict):
        raise CheckpointError(f"checkpoint {path} stores a run config that is not a mapping")
    # What evaluation never builds is dropped unread: stored callbacks, loggers and trainer
    # settings belong to the training run (and may name classes an older tree shipped).
    config = with_moved_targets(
        {key: value for key, value in stored["config"].items() if key not in RUN_ONLY_KEYS}
    )
    check_stored_config(config, path)
    return (
        OmegaConf.create(config),
        stored_metadata(stored.get("data"), path),
        stored_weights(checkpoint.get("state_dict"), path),
    )


def stored_metadata(values: Any, path: Path) -> DataMetadata:
    """The data metadata of a checkpoint, checked field by field (it sizes the model)."""
    names = [field.name for field in fields(DataMetadata)]
    if not isinstance(values, dict) or sorted(values) != sorted(names):
        raise CheckpointError(
            f"checkpoint {path} stores data metadata {values!r}; expected a dict with "
            f"exactly {', '.join(names)}"
        )
    for name, kind in METADATA_TYPES.items():
        if not isinstance(values[name], kind) or isinstance(values[name], bool):
            raise CheckpointError(
                f"checkpoint {path}: data metadata {name} = {values[name]!r} is not a "
                f"{kind.__name__}"
            )
    if not all(isinstance(size, int) and size >= 1 for size in values["input_shape"]):
        raise CheckpointError(
            f"checkpoint {path}: data metadata input_shape = {values['input_shape']!r} is not "
            "a list of positive integers"
        )
    return DataMetadata.from_dict(values)


def stored_weights(state_dict: Any, path: Path) -> dict[str, Tensor]:
    """The model weights of a checkpoint: a dict of tensors by parameter name."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"checkpoint {path} has no state_dict of model weights "
            f"(found {type(state_dict).__name__})"
        )
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise CheckpointError(
                f"checkpoint {path}: state_dict key {name!r} is a {type(name).__name__}, not a "
                "parameter name"
            )
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"checkpoint {path}: state_dict[{name!r}] is a {type(value).__name__}, not a tensor"
            )
    return state_dict


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint `cfg.ckpt_path` with the data and model of the run that wrote it."""
    ckpt_path = required_checkpoint(cfg, "weaksup-eval")
    validate_config(cfg)
    run_cfg, metadata, weights = load_checkpoint(ckpt_path)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(run_cfg)
    model = build_method(run_cfg, metadata)
    model.load_state_dict(weights)
    loggers = instantiate_named(cfg.get("logger"))
    start_wandb_runs(loggers)
    trainer = build_trainer(cfg, progress_callbacks(cfg), loggers)
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    output = {
        "test": scalar_metrics(results[0]) if results else {},
        "checkpoint": str(cfg.ckpt_path),
    }
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_metrics(output_dir, output)
        print_results(output, output_dir)
    return output


main = hydra_entry_point("eval", evaluate)


if __name__ == "__main__":
    main()
