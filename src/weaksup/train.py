"""`weaksup-train`: compose a run from config groups, fit, test the best checkpoint, write results.

    weaksup-train method=supervised loss=hinge data=digits backbone=mlp trainer.max_epochs=3
    weaksup-train -m loss=ce,hinge seed=1,2,3          # multirun + summary over seeds

`train(cfg)` is the plain function (tests call it in-process); `main` is the Hydra wrapper.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from weaksup.build import (
    build_datamodule,
    build_method,
    build_trainer,
    check_compatibility,
    instantiate_named,
)
from weaksup.config.validation import ConfigError, validate_config
from weaksup.results import print_results, scalar_metrics, write_metrics
from weaksup.run_logging import start_wandb_runs

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
RESOLVED_CONFIG = "config.yaml"


def resolve_resume_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path` when given; with `resume=auto`, `<output_dir>/checkpoints/last.ckpt` if it exists."""
    resume = cfg.get("resume")
    if resume not in (None, "auto"):
        raise ConfigError(
            f"resume must be null or 'auto', got {resume!r} (for a file use ckpt_path=...)"
        )
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} is not a file")
        return str(path)
    if resume == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / LAST_CHECKPOINT
        if last.is_file():
            log.info("resume=auto: continuing from %s", last)
            return str(last)
        log.info("resume=auto: no %s in %s, starting fresh", LAST_CHECKPOINT, last.parent)
    return None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured method, test it with the best checkpoint, write `metrics.json`.

    Returns the results written to `metrics.json`: final `val` metrics, `test` metrics,
    the monitored `best_score` and the `best_checkpoint` path.
    """
    validate_config(cfg)
    check_compatibility(cfg)
    resume_from = resolve_resume_checkpoint(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    output_dir = Path(cfg.paths.output_dir)
    _save_resolved_config(cfg, output_dir)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    callbacks = instantiate_named(cfg.get("callbacks"))
    loggers = instantiate_named(cfg.get("logger"))
    start_wandb_runs(loggers)  # ddp_fork/spawn: a W&B run first started in a worker stays empty
    trainer = build_trainer(cfg, callbacks, loggers)

    with warnings.catch_warnings():
        if resume_from is not None:  # continuing in the same folder is the point of resuming
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty"
            )
        # debug=overfit: Lightning replaces our shuffling sampler by a sequential one, as wanted.
        warnings.filterwarnings(
            "ignore", message="You requested to overfit but enabled train dataloader shuffling"
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    val_metrics = {
        k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("val/")
    }

    progress = _fit_progress(trainer)
    best_path = progress["best_checkpoint"]
    test_metrics: dict[str, float] = {}
    if cfg.get("test", True):
        results = trainer.test(
            model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False
        )
        test_metrics = scalar_metrics(results[0]) if results else {}

    results = {
        "val": val_metrics,
        "test": test_metrics,
        "monitor": cfg.monitor.metric,
        **progress,
    }
    _report(results, output_dir)
    return results


@rank_zero_only
def _save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / RESOLVED_CONFIG, resolve=True)


def _fit_progress(trainer: pl.Trainer) -> dict[str, Any]:
    """Best checkpoint and score, epochs and steps done.

    With spawned DDP workers (`trainer=ddp_cpu`) the loops ran in other processes and this
    trainer only knows the best path, so the rest is read back from the checkpoints.
    """
    checkpoint = trainer.checkpoint_callback
    best_path = (checkpoint.best_model_path if checkpoint is not None else "") or None
    progress = {
        "best_checkpoint": best_path,
        "best_score": None
        if checkpoint is None or checkpoint.best_model_score is None
        else float(checkpoint.best_model_score),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    if trainer.global_step == 0 and best_path is not None:
        last_path = Path(best_path).parent / LAST_CHECKPOINT
        last = torch.load(
            last_path if last_path.is_file() else best_path, map_location="cpu", weights_only=True
        )
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        states = [
            state
            for name, state in best.get("callbacks", {}).items()
            if name.startswith("ModelCheckpoint")
        ]
        score = states[0].get("best_model_score") if states else None
        progress.update(
            best_score=None if score is None else float(score),
            epochs=int(last["epoch"]) + 1,
            global_step=int(last["global_step"]),
        )
    return progress


@rank_zero_only
def _report(results: dict[str, Any], output_dir: Path) -> None:
    write_metrics(output_dir, results)
    print_results(results, output_dir)


# Lightning 2.6 + torch 2.13 warn on every fit about a pytree API Lightning still uses; not ours to fix.
warnings.filterwarnings(
    "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
)


@hydra.main(version_base="1.3", config_path="pkg://weaksup.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the monitored best score (the objective of sweepers)."""
    return train(cfg)["best_score"]


if __name__ == "__main__":
    main()
