"""`weaksup-predict ckpt_path=...`: score bags and single instances with a trained MIL model.

    weaksup-predict ckpt_path=<run>/checkpoints/last.ckpt                 # the run's test bags
    weaksup-predict ckpt_path=... split=val
    weaksup-predict ckpt_path=... input_path=bags.pt                      # your own instances

Everything about the model and the data comes from the checkpoint (as for `weaksup-eval`,
whose `load_checkpoint` rebuilds only what the shipped config tree names).
Writes to the output folder:

* `instance_predictions.csv`: one row per instance: `bag, instance, instance_score` (the
  instance scored alone, as a bag of one), `attention` (its weight in its bag; empty for
  poolings without), `instance_label` (when known);
* `bag_predictions.csv`: one row per bag: `bag, size, bag_score, bag_label` (when known);
* `predictions.pt`: the same as tensors (`torch.load(..., weights_only=True)`).

`input_path` is a `torch.save`d dict with `instances` `[N, *instance_shape]` and optionally
`bag_offsets` `[B + 1]` (default: every instance a bag of one).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

import weaksup.quiet  # noqa: F401  (drops third-party chatter; before any Trainer)
from weaksup.build import build_datamodule, build_method, build_trainer
from weaksup.cli import hydra_entry_point
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.bags import BagBatch, BagBatchDataset
from weaksup.data.datamodules import keep_prebatched
from weaksup.eval import load_checkpoint, required_checkpoint
from weaksup.files import atomic_write
from weaksup.methods.mil import MILClassifier
from weaksup.progress import progress_callbacks

log = logging.getLogger(__name__)

INSTANCE_FILE = "instance_predictions.csv"
BAG_FILE = "bag_predictions.csv"
TENSOR_FILE = "predictions.pt"


def load_input_bags(path: str | Path) -> BagBatch:
    """User instances from a `torch.save`d dict (`instances`, optional `bag_offsets`).

    The bag labels are unknown: placeholders of 0, not written out.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"input_path={str(path)!r} is not a file")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or "instances" not in content:
        raise ConfigError(
            f"{path} must hold a dict with 'instances' (and optionally 'bag_offsets')"
        )
    instances = torch.as_tensor(content["instances"], dtype=torch.float32)
    offsets = content.get("bag_offsets")
    if offsets is None:
        offsets = torch.arange(instances.shape[0] + 1)
    offsets = torch.as_tensor(offsets, dtype=torch.long)
    return BagBatch(instances, offsets, torch.zeros(offsets.shape[0] - 1, dtype=torch.long))


def concatenate_predictions(parts: list[dict[str, Tensor | None]]) -> dict[str, Tensor | None]:
    """Join per-batch outputs of `MILClassifier.predict_step`; offsets become global."""
    offsets, shift = [torch.zeros(1, dtype=torch.long)], 0
    for part in parts:
        offsets.append(part["bag_offsets"][1:].cpu() + shift)
        shift += int(part["bag_offsets"][-1])
    joined: dict[str, Tensor | None] = {"bag_offsets": torch.cat(offsets)}
    for key in ("bag_scores", "instance_scores", "attention", "bag_labels", "instance_labels"):
        values = [part[key] for part in parts]
        joined[key] = (
            None if any(v is None for v in values) else torch.cat([v.cpu() for v in values])
        )
    return joined


def write_predictions(
    output_dir: Path, predictions: dict[str, Tensor | None], with_labels: bool
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(output_dir / TENSOR_FILE, "wb") as stream:
        torch.save({k: v for k, v in predictions.items() if v is not None}, stream)
    offsets = predictions["bag_offsets"]
    sizes = (offsets[1:] - offsets[:-1]).tolist()
    bag_labels = predictions["bag_labels"] if with_labels else None
    with atomic_write(output_dir / BAG_FILE, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["bag", "size", "bag_score"] + (["bag_label"] if bag_labels is not None else [])
        )
        for bag, (size, score) in enumerate(
            zip(sizes, predictions["bag_scores"].tolist(), strict=True)
        ):
            writer.writerow(
                [bag, size, f"{score:.6f}"]
                + ([int(bag_labels[bag])] if bag_labels is not None else [])
            )
    attention = predictions["attention"]
    instance_labels = predictions["instance_labels"] if with_labels else None
    bag_of = torch.repeat_interleave(
        torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long)
    )
    position = torch.arange(int(offsets[-1])) - offsets[:-1][bag_of]
    with atomic_write(output_dir / INSTANCE_FILE, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["bag", "instance", "instance_score", "attention"]
            + (["instance_label"] if instance_labels is not None else [])
        )
        for row, score in enumerate(predictions["instance_scores"].tolist()):
            writer.writerow(
                [
                    int(bag_of[row]),
                    int(position[row]),
                    f"{score:.6f}",
                    "" if attention is None else f"{float(attention[row]):.6f}",
                ]
                + ([int(instance_labels[row])] if instance_labels is not None else [])
            )


def predict(cfg: DictConfig) -> dict[str, Tensor | None]:
    """Score the bags of `cfg.split` (or of `cfg.input_path`) with the model of `cfg.ckpt_path`."""
    ckpt_path = required_checkpoint(cfg, "weaksup-predict")
    validate_config(cfg)
    run_cfg, metadata, weights = load_checkpoint(ckpt_path)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_method(run_cfg, metadata)
    model.load_state_dict(weights)
    if not isinstance(model, MILClassifier):
        raise ConfigError(
            f"weaksup-predict scores bags and instances of MIL models; {cfg.ckpt_path} holds a "
            f"{type(model).__name__} (use weaksup-eval for it)"
        )
    if cfg.get("input_path"):
        bags, with_labels = load_input_bags(cfg.input_path), False
    else:
        bags, with_labels = build_datamodule(run_cfg).split(cfg.split), True
    loader = DataLoader(
        BagBatchDataset(bags), batch_size=cfg.batch_size, collate_fn=keep_prebatched, shuffle=False
    )
    trainer = build_trainer(cfg, progress_callbacks(cfg), [])
    parts = trainer.predict(model, dataloaders=loader)
    predictions = concatenate_predictions(parts)
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_predictions(output_dir, predictions, with_labels)
        log.info("predictions of %d bags written to %s", bags.num_bags, output_dir)
    return predictions


main = hydra_entry_point("predict", predict)


if __name__ == "__main__":
    main()
