"""`weaksup-eval ckpt_path=...`: rebuild data and model from a checkpoint alone and test it.

The checkpoint carries the resolved run config and the data metadata (plain values, so it
loads under `torch.load(weights_only=True)`), hence no other argument is needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from weaksup.build import build_datamodule, build_method, build_trainer, instantiate_named
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.base import CHECKPOINT_KEY
from weaksup.results import print_results, scalar_metrics, write_metrics
from weaksup.run_logging import start_wandb_runs


def load_checkpoint(ckpt_path: str | Path) -> tuple[DictConfig, DataMetadata, dict[str, Any]]:
    """The run config, data metadata and model weights stored in a weaksup checkpoint."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} is not a file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not stored or stored.get("config") is None:
        raise ConfigError(f"{path} holds no weaksup run config (was it written by weaksup-train?)")
    return (
        OmegaConf.create(stored["config"]),
        DataMetadata.from_dict(stored["data"]),
        checkpoint["state_dict"],
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint `cfg.ckpt_path` with the data and model of the run that wrote it."""
    validate_config(cfg)
    run_cfg, metadata, weights = load_checkpoint(cfg.ckpt_path)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(run_cfg)
    model = build_method(run_cfg, metadata)
    model.load_state_dict(weights)
    loggers = instantiate_named(cfg.get("logger"))
    start_wandb_runs(loggers)
    trainer = build_trainer(cfg, [], loggers)
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


# Lightning 2.6 + torch 2.13 warn on every fit about a pytree API Lightning still uses; not ours to fix.
warnings.filterwarnings(
    "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
)


@hydra.main(version_base="1.3", config_path="pkg://weaksup.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
