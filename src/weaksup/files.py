"""Crash-safe file writes: a kill at any moment leaves the old file or the new one, never half of one.

Every file a run writes (checkpoints, `metrics.json`, `config.yaml`, summaries) goes through
`atomic_write`: the content is written to a hidden temporary file beside the target, in the
same folder (so the same file system, whatever `$TMPDIR` is), flushed to disk, then renamed
over the target (`os.replace` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success it replaces `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
        with os.fdopen(descriptor, mode, newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_write(path) as stream:
        stream.write(text)
    return Path(path)


def atomic_save_figure(figure: Any, path: str | Path, **savefig_arguments: Any) -> Path:
    """`figure.savefig` to `path` atomically (the format comes from the file's suffix)."""
    path = Path(path)
    with atomic_write(path, "wb") as stream:
        figure.savefig(stream, format=path.suffix.lstrip(".") or "png", **savefig_arguments)
    return path
