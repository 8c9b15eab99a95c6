"""OmegaConf resolvers used by the shipped configs; importing this module registers them.

name: ${weaksup.run_name:${paths.output_dir}}    # the run folder's name (<sweep>/<job> in a multirun)
group: ${weaksup.sweep_name:}                    # the sweep folder's name in a multirun, else null
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


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


RESOLVERS: dict[str, Callable[..., Any]] = {
    "weaksup.path_name": path_name,
    "weaksup.run_name": run_name,
    "weaksup.sweep_name": sweep_name,
}


def register_resolvers() -> None:
    """Register every resolver of `RESOLVERS` once (importing the module twice is harmless)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()
