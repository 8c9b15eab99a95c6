"""OmegaConf resolvers used by the shipped configs; importing this module registers them.

name: ${weaksup.run_name:${paths.output_dir}}    # the run folder's name (<sweep>/<job> in a multirun)
group: ${weaksup.sweep_name:}                    # the sweep folder's name in a multirun, else null

and the Optuna settings of `conf/hparams_search/_optuna.yaml`:

direction: ${weaksup.optuna_direction:${monitor.mode}}     # max -> maximize, min -> minimize
storage: ${weaksup.sqlite_storage:<file>}                  # sqlite:///<absolute file>, folder made
seed: ${weaksup.study_seed:<storage>,<study name>,<seed>}  # <seed> + trials already in the study
n_jobs: ${weaksup.parallel_jobs:${hydra.launcher}}         # trials asked per batch: jobs at once
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from weaksup.config.validation import ConfigError

SQLITE_PREFIX = "sqlite:///"


def path_name(path: str) -> str:
    """The last component of `path` (a run folder's name: `3` in a multirun, `14-03-59-123456`)."""
    return Path(str(path)).name


def run_name(path: str) -> str:
    """A run's display name: its folder's name, `<sweep folder>/<job>` for a multirun job.

    Multirun job folders are bare job numbers (`3`), which say little on their own in W&B.
    """
    sweep = sweep_name()
    return f"{sweep}/{path_name(path)}" if sweep else path_name(path)


def sweep_name() -> str | None:
    """The name of the multirun sweep folder inside a multirun job; `None` in a single run.

    Also `None` outside a Hydra app (a config composed with `hydra.compose` in a test).
    """
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(str(hydra_cfg.sweep.dir)).name


def optuna_direction(mode: str) -> str:
    """Optuna's direction for `monitor.mode`: `max` -> `maximize`, `min` -> `minimize`.

    The Optuna sweeper minimises unless told otherwise; on `val/acc` it would keep the worst
    trial. Following `monitor.mode` keeps the search and the checkpoint choice in agreement.
    """
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        raise ConfigError(f"'monitor.mode' must be max or min, got {mode!r}")
    return directions[mode]


def sqlite_storage(path: str) -> str:
    """`sqlite:///<absolute path>` for an Optuna study file; its folder is created now.

    The sweeper opens the study before the launcher creates any folder, and SQLite does not
    create missing folders ("unable to open database file").
    """
    file = Path(str(path)).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return SQLITE_PREFIX + str(file)


def stored_trials(storage: str, study_name: str) -> int:
    """How many trials of `study_name` the SQLite `storage` holds (0: no file, no study).

    Read with `sqlite3` in read-only mode: opening it with Optuna would create the file and
    its tables. The tables are those of Optuna's RDB storage (`studies`, `trials`).
    """
    if not str(storage).startswith(SQLITE_PREFIX):
        return 0
    file = Path(str(storage).removeprefix(SQLITE_PREFIX))
    if not file.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as connection:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ?",
                (str(study_name),),
            ).fetchone()
    except sqlite3.Error:  # not an Optuna file (yet): Optuna reports it when it opens it
        return 0
    return int(count)


def study_seed(storage: str, study_name: str, seed: int) -> int:
    """The sampler seed of this command: `seed` plus the trials the study already holds.

    A resumed study with the first command's seed would propose the same parameters again
    (the random start-up trials of TPE); this stays reproducible and proposes new ones.
    """
    return int(seed) + stored_trials(storage, study_name)


def parallel_jobs(launcher: Mapping[str, Any] | None) -> int:
    """How many jobs `launcher` runs at once: the Optuna sweeper asks that many trials per batch.

    joblib: `n_jobs` (-1: every core, -2: all but one, as joblib counts); submitit:
    `array_parallelism`; the basic launcher (one job after the other): 1.
    """
    if not launcher:
        return 1
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs", -1))
        return max(1, n_jobs if n_jobs > 0 else available_cores() + 1 + n_jobs)
    if "submitit" in target:
        return max(1, int(launcher.get("array_parallelism", 1)))
    return 1


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's core count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


RESOLVERS: dict[str, Callable[..., Any]] = {
    "weaksup.path_name": path_name,
    "weaksup.run_name": run_name,
    "weaksup.sweep_name": sweep_name,
    "weaksup.optuna_direction": optuna_direction,
    "weaksup.sqlite_storage": sqlite_storage,
    "weaksup.study_seed": study_seed,
    "weaksup.parallel_jobs": parallel_jobs,
}


def register_resolvers() -> None:
    """Register every resolver of `RESOLVERS` once (importing the module twice is harmless)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()
