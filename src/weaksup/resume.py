"""Resuming a run: which checkpoint, and whether the config still describes the same run.

`resume=auto` continues from `<output folder>/checkpoints/last.ckpt`; `resume=newest` from the
newest checkpoint of that folder that loads (the way out when `last.ckpt` is corrupt); a file
given as `ckpt_path=` from that file. The resumed run's config is compared with the one stored
in the checkpoint: only the keys of `RESUMABLE_KEYS` (how long to train, where and on what
hardware, how to log) may differ. Any other difference stops the run with the keys listed,
unless `resume_accept=[key, ...]` names them (`resume_accept=['*']` accepts all): a silent
mismatch would record one config and train with another (optimizer state restores the old
learning rate, for one).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weaksup.checkpoints import CheckpointError, read_checkpoint
from weaksup.config.validation import ConfigError
from weaksup.methods.base import CHECKPOINT_KEY
from weaksup.run_logging import flatten_config

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
RESUME_MODES = (None, "auto", "newest")

# Callbacks decide what is saved, shown and plotted, except these, which shape the training.
TRAINING_CALLBACKS: tuple[str, ...] = ("callbacks.reseed", "callbacks.reseed.*")
# Keys that may change when a run is resumed (glob patterns over dotted keys). Everything else
# changes what is trained and must match the stored config (or be accepted by resume_accept).
RESUMABLE_KEYS: tuple[str, ...] = (
    "resume",
    "resume_accept",
    "ckpt_path",
    "test",
    "paths.*",
    "logger",
    "logger.*",
    "callbacks",
    "callbacks.*",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.min_epochs",
    "trainer.min_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps",
    "data.num_workers",
    "num_threads",
)


@dataclass(frozen=True)
class ConfigChange:
    key: str
    stored: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.stored)} -> {_show(self.requested)}"


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def _matches_any(key: str, patterns: Iterable[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(key, pattern) or key.startswith(f"{pattern}.") for pattern in patterns
    )


def _relative_to_output_dir(flat: dict[str, Any]) -> dict[str, Any]:
    """Paths inside the run's output folder, written relative to it (`<output_dir>/checkpoints`).

    A run resumed from a checkpoint into another folder has all of them changed with
    `paths.output_dir`, which may change.
    """
    output_dir = flat.get("paths.output_dir")
    if not isinstance(output_dir, str) or not output_dir:
        return flat
    return {
        key: value.replace(output_dir, "<output_dir>", 1)
        if isinstance(value, str) and value.startswith(output_dir)
        else value
        for key, value in flat.items()
    }


def config_changes(
    stored: Mapping[str, Any], requested: Mapping[str, Any], allowed: Sequence[str]
) -> list[ConfigChange]:
    """Differences between two plain configs, leaving out keys matching `allowed`.

    Paths inside each config's own output folder compare relative to it.
    """
    old = _relative_to_output_dir(flatten_config(stored, separator="."))
    new = _relative_to_output_dir(flatten_config(requested, separator="."))
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before == after or (
            _matches_any(key, allowed) and not _matches_any(key, TRAINING_CALLBACKS)
        ):
            continue
        changes.append(ConfigChange(key, before, after))
    return changes


def check_resumed_config(
    stored: Mapping[str, Any] | None,
    requested: Mapping[str, Any],
    accepted: Sequence[str],
    checkpoint: Path,
) -> list[ConfigChange]:
    """Stop unless the requested config trains what the checkpoint's run trained.

    Returns the accepted changes (keys outside `RESUMABLE_KEYS` named by `resume_accept`).
    """
    if stored is None:
        raise CheckpointError(
            f"{checkpoint} holds no weaksup run config, so a resume cannot be checked against it "
            "(was it written by weaksup-train?)"
        )
    changes = config_changes(stored, requested, RESUMABLE_KEYS)
    refused = [change for change in changes if not _matches_any(change.key, accepted)]
    if refused:
        listed = "\n  ".join(str(change) for change in refused)
        keys = ",".join(change.key for change in refused)
        raise ConfigError(
            f"resuming from {checkpoint} with a config that differs from the stored one in keys "
            f"that change what is trained:\n  {listed}\nResume with the original values, or "
            f"accept the changes explicitly with resume_accept=[{keys}]. Keys that may change on "
            f"resume: {', '.join(RESUMABLE_KEYS)} (not {', '.join(TRAINING_CALLBACKS)})."
        )
    return changes


def _newest_readable(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of `folder` with the highest global step that loads."""
    candidates = []
    for path in sorted(folder.glob("*.ckpt")):
        try:
            content = read_checkpoint(path)
        except CheckpointError as error:
            log.warning("resume=newest: skipping %s", error)
            continue
        candidates.append(
            (int(content.get("global_step", -1)), path.name != LAST_CHECKPOINT, path, content)
        )
    if not candidates:
        raise CheckpointError(f"resume=newest: no checkpoint in {folder} loads")
    _, _, path, content = max(candidates, key=lambda item: (item[0], item[1]))
    return path, content


def find_resume_checkpoint(
    resume: str | None, ckpt_path: str | None, output_dir: Path
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from and its content, or None for a fresh run.

    A corrupt `last.ckpt` under `resume=auto` stops with the file named and `resume=newest`
    offered; the content is read with `weights_only=True`.
    """
    if resume not in RESUME_MODES:
        raise ConfigError(
            f"resume must be null, 'auto' or 'newest', got {resume!r} (for a file use ckpt_path=...)"
        )
    if ckpt_path:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path!r} is not a file")
        return path, read_checkpoint(path)
    folder = output_dir / "checkpoints"
    if resume == "newest":
        return _newest_readable(folder) if any(folder.glob("*.ckpt")) else None
    if resume == "auto":
        last = folder / LAST_CHECKPOINT
        if not last.is_file():
            log.info("resume=auto: no %s in %s, starting fresh", LAST_CHECKPOINT, folder)
            return None
        try:
            content = read_checkpoint(last)
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}. To continue from the newest checkpoint of {folder} that loads, "
                "pass resume=newest."
            ) from None
        log.info("resume=auto: continuing from %s", last)
        return last, content
    return None


def stored_config(content: Mapping[str, Any]) -> Mapping[str, Any] | None:
    stored = content.get(CHECKPOINT_KEY)
    return stored.get("config") if isinstance(stored, Mapping) else None
