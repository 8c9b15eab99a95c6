"""Torch threads per job: `num_threads` of the run config, or a fair share under parallel jobs.

Several jobs on shared cores, each with torch's default thread count (every core), slow each
other down far more than the work explains: on a busy 2-core machine one small job took 6.5
minutes with the default threads and 31 s with one (`../shared/stack.md`). So a run sets
`torch.set_num_threads(num_threads)` at its start; with `num_threads: null` it keeps torch's
default, except under the joblib launcher, where each job takes cores / `hydra.launcher.n_jobs`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from weaksup.config.validation import ConfigError
from weaksup.resolvers import available_cores, parallel_jobs

log = logging.getLogger(__name__)


def job_threads(setting: Any, launcher: Mapping[str, Any] | None = None) -> int | None:
    """The torch thread count of a job: `setting` when given, else the job's share of the cores
    under the joblib launcher (at least 1), else None (torch's default)."""
    if setting is not None:
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(
                f"'num_threads' must be an integer >= 1, or null for torch's default, got {setting!r}"
            )
        return setting
    if launcher is not None and str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return max(1, available_cores() // parallel_jobs(launcher))
    return None


def threads_of_run(cfg: DictConfig) -> int | None:
    """`job_threads` for a composed run config, reading the launcher from Hydra when it runs."""
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else None
    return job_threads(cfg.get("num_threads"), launcher)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """`torch.set_num_threads(count)` for the block, the previous count restored after it (the
    next job of a multirun in the same process starts from torch's setting); None: unchanged."""
    if count is None:
        yield
        return
    import torch  # here: the CLI's error handling should not wait for torch to import

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    log.info("torch threads: %d (of %d cores)", count, available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
