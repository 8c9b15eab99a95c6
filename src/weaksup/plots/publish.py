"""Publish a run's figure: saved in the run folder, logged as an image to every W&B logger.

Every figure a method or callback draws (bag mosaics, decision regions, reconstructions,
augmentation grids) goes through `publish_figure`, so the file on disk and the W&B image are
the same picture under one key, and a run without W&B only writes the file. Call it on rank 0
(the callers check `trainer.is_global_zero`): two ranks would write the same file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytorch_lightning as pl
from matplotlib.figure import Figure
from pytorch_lightning.loggers import Logger, WandbLogger

from weaksup.files import atomic_save_figure

#: A module attached to a trainer, the trainer, or loggers (then `path` names the file).
PublishTarget = pl.LightningModule | pl.Trainer | Iterable[Logger]


def publish_figure(
    target: PublishTarget,
    figure: Figure | str | Path,
    key: str,
    path: str | Path | None = None,
    dpi: int = 100,
) -> Path:
    """Save `figure` in the run folder and log it as the image `key` to every W&B logger.

    Args:
        target: a LightningModule attached to a trainer, a Trainer (its loggers; the run folder
            is `trainer.default_root_dir`), or loggers (no run folder: `path` is needed for a
            `Figure`).
        figure: a matplotlib `Figure` (saved, then closed), or the path of a figure already saved
            (a plot function's return value), logged as it is.
        key: the W&B key, with the stage as prefix (`test/bag_mosaic`).
        path: where a `Figure` is saved; relative paths are inside the run folder. Default:
            `<run folder>/<last part of key>.png`.
        dpi: resolution of a saved `Figure`.

    Returns:
        the figure's file. W&B images are logged at the trainer's global step when there is one.

    Raises:
        FileNotFoundError: `figure` is a path that does not exist.
        ValueError: a `Figure` with neither a run folder nor an absolute `path`.
    """
    trainer = _trainer(target)
    loggers = list(trainer.loggers) if trainer is not None else list(target)  # type: ignore[arg-type]
    if isinstance(figure, str | Path):
        saved = Path(figure)
        if not saved.is_file():
            raise FileNotFoundError(f"figure {key!r}: no file {saved}")
    else:
        saved = _figure_path(trainer, key, path)
        try:
            atomic_save_figure(figure, saved, dpi=dpi)
        finally:
            plt.close(figure)  # a no-op for figures pyplot does not manage
    step = trainer.global_step if trainer is not None else None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(saved)], step=step)
    return saved


def _trainer(target: PublishTarget) -> pl.Trainer | None:
    if isinstance(target, pl.Trainer):
        return target
    if isinstance(target, pl.LightningModule):
        return target.trainer  # raises when the module is not attached to a trainer
    return None


def _figure_path(trainer: pl.Trainer | None, key: str, path: str | Path | None) -> Path:
    folder = (
        None if trainer is None or trainer.default_root_dir is None else trainer.default_root_dir
    )
    if path is not None and Path(path).is_absolute():
        return Path(path)
    if folder is None:
        raise ValueError(
            f"figure {key!r}: no run folder (no trainer given), so path must be an absolute file path"
        )
    return Path(folder) / (path if path is not None else f"{key.rsplit('/', 1)[-1]}.png")
