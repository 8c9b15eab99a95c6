"""Reading checkpoints as untrusted data: `weights_only=True`, and errors that name the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from weaksup.config.validation import ConfigError
from weaksup.files import atomic_write


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, truncated, corrupt or not a weaksup checkpoint."""


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The content of a checkpoint, loaded with `torch.load(weights_only=True)` (on the CPU by default).

    A missing, truncated or corrupt file, or one that holds pickled code, raises
    `CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
    ) as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated, corrupt, or it holds pickled code "
            f"that weights_only loading refuses): {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(content, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(content).__name__}, not a dict")
    return content


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for every run: atomic saves, and loads that execute no code.

    `save_checkpoint` writes through `weaksup.files.atomic_write` (a temporary file beside the
    target, then a rename), so a kill never leaves a truncated `last.ckpt` or best checkpoint;
    Lightning's own `_atomic_save` only serialises in memory before writing in place.
    `load_checkpoint` (resume, `trainer.test(ckpt_path=...)`) always reads with
    `weights_only=True`, whatever the caller passes, and names the file when it is unreadable.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path, "wb") as stream:
            torch.save(checkpoint, stream)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = True
    ) -> dict[str, Any]:
        return read_checkpoint(path, map_location)
