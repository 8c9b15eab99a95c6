"""One run per folder: a fresh run never overwrites another run's results, and two runs never share a folder.

A run folder holds one run: its `config.yaml`, `metrics.json` and `checkpoints/`. A fresh run
(no resume) in a folder that already holds results stops before writing anything; a second
run started while one is running stops at the lock file `.weaksup.lock`, which records the
owner's host and process id. A lock left by a killed run (same host, process gone) is taken
over; a lock from another host is only released by deleting it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from weaksup.config.validation import ConfigError

LOCK_FILE = ".weaksup.lock"
# What a run writes that a fresh run would overwrite (Hydra's `.hydra/` and log are not results).
RESULT_FILES = ("config.yaml", "metrics.json")
CHECKPOINT_GLOB = "checkpoints/*.ckpt"


class RunFolderError(ConfigError):
    """The output folder belongs to another run (finished or running)."""


def results_in(folder: Path) -> list[str]:
    """The results of an earlier run found in `folder` (relative names), sorted."""
    found = [name for name in RESULT_FILES if (folder / name).is_file()]
    found += [str(path.relative_to(folder)) for path in folder.glob(CHECKPOINT_GLOB)]
    return sorted(found)


def refuse_foreign_results(folder: Path) -> None:
    """Stop a fresh run in a folder that holds another run's results."""
    found = results_in(folder)
    if found:
        raise RunFolderError(
            f"{folder} holds the results of an earlier run ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}); a fresh run would overwrite them. Continue "
            "that run with resume=auto, or start this one in another folder (hydra.run.dir=...)."
        )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_owner(lock: Path) -> dict[str, object]:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _is_stale(owner: dict[str, object]) -> bool:
    pid = owner.get("pid")
    return (
        owner.get("host") == socket.gethostname()
        and isinstance(pid, int)
        and not _process_alive(pid)
    )


def acquire_lock(folder: Path) -> Path:
    """Create `folder/.weaksup.lock` for this process, or stop naming the run that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_owner(lock)
            if _is_stale(holder):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            started = holder.get("started")
            since = (
                time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
                if isinstance(started, int | float)
                else ""
            )
            raise RunFolderError(
                f"another weaksup run (process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}{since}) is using {folder}; wait for it to end or "
                f"choose another folder (hydra.run.dir=...). If no such run exists, delete {lock}."
            ) from None
        with os.fdopen(descriptor, "w") as stream:
            json.dump(owner, stream)
        return lock
    raise RunFolderError(f"could not take the lock {lock} (it keeps reappearing)")


def release_lock(lock: Path) -> None:
    """Remove the lock if this process still owns it."""
    if _read_owner(lock).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


@contextlib.contextmanager
def run_folder(folder: Path, resuming: bool, is_rank_zero: bool = True) -> Iterator[None]:
    """Hold `folder` for this run: refuse foreign results (fresh runs) and concurrent runs.

    Only rank 0 claims the folder: with `strategy=ddp` every rank runs the entry point in it.
    """
    if not is_rank_zero:
        yield
        return
    if not resuming:
        refuse_foreign_results(folder)
    lock = acquire_lock(folder)
    try:
        yield
    finally:
        release_lock(lock)


def remove_if_only_hydra_files(folder: Path) -> bool:
    """Delete a run folder that holds nothing but what Hydra wrote at job start.

    A run stopped by a config error would otherwise leave a folder with `.hydra/*.yaml` and an
    empty-ish log file. Returns whether the folder was removed.
    """
    if not folder.is_dir():
        return False
    hydra_dir = folder / ".hydra"
    for entry in folder.iterdir():
        if entry == hydra_dir and entry.is_dir():
            if any(not (p.is_file() and p.suffix == ".yaml") for p in entry.iterdir()):
                return False
        elif not (entry.is_file() and entry.suffix == ".log"):
            return False
    shutil.rmtree(folder)
    return True
