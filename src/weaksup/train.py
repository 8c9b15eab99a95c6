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

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

import weaksup.quiet  # noqa: F401  (drops third-party chatter; before any Trainer)
from weaksup.build import (
    build_datamodule,
    build_method,
    build_trainer,
    cfg_without_hydra,
    check_compatibility,
    instantiate_named,
)
from weaksup.checkpoints import read_checkpoint
from weaksup.cli import hydra_entry_point
from weaksup.config.validation import ConfigError, validate_config
from weaksup.files import atomic_write_text
from weaksup.resolvers import optuna_direction
from weaksup.results import print_results, scalar_metrics, write_metrics
from weaksup.resume import (
    LAST_CHECKPOINT,
    ConfigChange,
    check_resumed_config,
    find_resume_checkpoint,
    stored_config,
)
from weaksup.run_folder import remove_if_only_hydra_files, run_folder
from weaksup.run_logging import finish_wandb_runs, start_wandb_runs

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "config.yaml"


def check_run_settings(cfg: DictConfig) -> None:
    """Settings that would make a run do nothing useful, caught before anything is loaded."""
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs == 0 or (isinstance(max_epochs, int) and max_epochs < -1):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} trains nothing; use an epoch count >= 1 "
            "(or -1 with trainer.max_steps)"
        )
    check_sweeper_objective(cfg)


def check_sweeper_objective(cfg: DictConfig) -> None:
    """A sweeper that optimises the run's result needs a number: stop now if there will be none."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    sweeper = str(hydra_cfg.sweeper.get("_target_", ""))
    if hydra_cfg.mode != RunMode.MULTIRUN or sweeper.endswith("BasicSweeper"):
        return
    monitor = str(cfg.monitor.metric)
    check_sweeper_direction(cfg, sweeper, hydra_cfg.sweeper.get("direction"))
    every, epochs = cfg.trainer.get("check_val_every_n_epoch"), cfg.trainer.get("max_epochs")
    if cfg.trainer.get("limit_val_batches") == 0:
        reason = "trainer.limit_val_batches=0 runs no validation"
    elif isinstance(every, int) and isinstance(epochs, int) and 0 < epochs < every:
        reason = f"trainer.check_val_every_n_epoch={every} > trainer.max_epochs={epochs}"
    else:
        return
    if monitor.startswith("val/"):
        raise ConfigError(
            f"the sweeper {sweeper.rsplit('.', 1)[-1]} optimises {monitor}, but {reason}, so "
            "no score would come back; let validation run, or monitor a train/ metric"
        )


def check_sweeper_direction(cfg: DictConfig, sweeper: str, direction: Any) -> None:
    """An Optuna study must maximise a score that `monitor.mode=max` says is better when larger.

    Optuna minimises by default, so a hand-written `hydra/sweeper=optuna` on `val/acc` would keep
    the worst trial (`hparams_search=...` options set the direction from `monitor.mode`).
    """
    if not sweeper.endswith("OptunaSweeper") or direction is None:
        return
    wanted = optuna_direction(str(cfg.monitor.mode))
    given = str(getattr(direction, "name", direction)).lower()
    if given != wanted:
        raise ConfigError(
            f"hydra.sweeper.direction={given} but monitor.mode={cfg.monitor.mode} "
            f"({cfg.monitor.metric}): the study would keep the worst trial; set "
            f"hydra.sweeper.direction={wanted} (or use an hparams_search= option, which sets it)"
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured method, test it with the best checkpoint, write `metrics.json`.

    Returns the results written to `metrics.json`: final `val` metrics, `test` metrics,
    the monitored `best_score` and the `best_checkpoint` path.
    """
    output_dir = Path(cfg.paths.output_dir)
    try:
        validate_config(cfg)
        check_run_settings(cfg)
        check_compatibility(cfg)
        resume = find_resume_checkpoint(cfg.get("resume"), cfg.get("ckpt_path"), output_dir)
        accepted = []
        if resume is not None:
            accepted = check_resumed_config(
                stored_config(resume[1]),
                cfg_without_hydra(cfg),
                list(cfg.get("resume_accept") or []),
                resume[0],
            )
        with run_folder(
            output_dir, resuming=resume is not None, is_rank_zero=rank_zero_only.rank == 0
        ):
            return _fit_and_test(cfg, output_dir, resume[0] if resume else None, accepted)
    except Exception:
        _remove_folder_of_stopped_run(output_dir)
        raise


def _fit_and_test(
    cfg: DictConfig, output_dir: Path, resume_from: Path | None, accepted: list[ConfigChange]
) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)  # loads and checks the data
    model = build_method(cfg, datamodule.metadata)
    _save_resolved_config(cfg, output_dir)  # once the data and the model are known to build
    model.resumed_optimizer_settings = {
        change.key.split(".", 1)[1]: change.requested
        for change in accepted
        if change.key.startswith("optimizer.") and change.key != "optimizer._target_"
    }
    callbacks = instantiate_named(cfg.get("callbacks"))
    loggers = instantiate_named(cfg.get("logger"))
    start_wandb_runs(loggers)  # ddp_fork/spawn: a W&B run first started in a worker stays empty
    trainer = build_trainer(cfg, callbacks, loggers, method=model)

    with warnings.catch_warnings():
        if resume_from is not None:  # continuing in the same folder is the point of resuming
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty"
            )
        # debug=overfit: Lightning replaces our shuffling sampler by a sequential one, as wanted.
        warnings.filterwarnings(
            "ignore", message="You requested to overfit but enabled train dataloader shuffling"
        )
        trainer.fit(
            model,
            datamodule=datamodule,
            ckpt_path=None if resume_from is None else str(resume_from),
            weights_only=True,
        )
    fit_metrics = scalar_metrics(trainer.callback_metrics)
    val_metrics = {k: v for k, v in fit_metrics.items() if k.startswith("val/")}

    progress = _fit_progress(trainer)
    best_path = progress["best_checkpoint"]
    test_metrics: dict[str, float] = {}
    if cfg.get("test", True):
        results = trainer.test(
            model,
            datamodule=datamodule,
            ckpt_path=best_path or None,
            verbose=False,
            weights_only=True,
        )
        test_metrics = scalar_metrics(results[0]) if results else {}

    results = {
        "val": val_metrics,
        "test": test_metrics,
        "monitor": cfg.monitor.metric,
        "last_score": fit_metrics.get(cfg.monitor.metric),
        **progress,
    }
    finish_wandb_runs(loggers)  # W&B's footer now, above the results and the output folder
    _report(results, output_dir)
    return results


def _remove_folder_of_stopped_run(output_dir: Path) -> None:
    """A single run stopped before it wrote anything leaves no folder with only Hydra's files."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return  # a multirun job's folder records its failure; outside Hydra nothing was made
    if rank_zero_only.rank == 0 and remove_if_only_hydra_files(output_dir):
        log.debug("removed %s: the run stopped before writing anything", output_dir)


@rank_zero_only
def _save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    atomic_write_text(output_dir / RESOLVED_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def _fit_progress(trainer: pl.Trainer) -> dict[str, Any]:
    """Best checkpoint and score, epochs and steps done.

    `global_step` counts optimizer steps (Lightning's count: a method with two optimizers makes
    two per batch); `iterations` counts training batches (with `accumulate_grad_batches`,
    accumulated groups), the x-axis of the step logs (`_batches_that_stepped`).

    With spawned DDP workers (`trainer=ddp_cpu`) the loops ran in other processes and this
    trainer only knows the best path, so the rest is read back from the checkpoints
    (`last.ckpt` is written at the end of every epoch, so it holds the final counts).
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
        "iterations": trainer.fit_loop.epoch_loop._batches_that_stepped,
    }
    if trainer.global_step == 0 and best_path is not None:
        last_path = Path(best_path).parent / LAST_CHECKPOINT
        last = read_checkpoint(last_path if last_path.is_file() else best_path)
        best = read_checkpoint(best_path)
        states = [
            state
            for name, state in best.get("callbacks", {}).items()
            if name.startswith("ModelCheckpoint") and state.get("monitor") is not None
        ]
        score = states[0].get("best_model_score") if states else None
        progress.update(
            best_score=None if score is None else float(score),
            epochs=int(last["epoch"]) + 1,
            global_step=int(last["global_step"]),
            iterations=int(
                last["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
            ),
        )
    return progress


@rank_zero_only
def _report(results: dict[str, Any], output_dir: Path) -> None:
    write_metrics(output_dir, results)
    print_results(results, output_dir)


def sweep_objective(cfg: DictConfig) -> float | None:
    """Train, and return the monitored best score (the objective of sweepers).

    Without a best score (no checkpoint callback, `fast_dev_run`) the last value of the
    monitored metric stands in; a sweeper that needs a number and cannot get one is stopped
    at start by `check_sweeper_objective`.
    """
    results = train(cfg)
    return results["best_score"] if results["best_score"] is not None else results["last_score"]


main = hydra_entry_point("train", sweep_objective)


if __name__ == "__main__":
    main()
