"""Instantiate a config node the way users expect to see errors."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig


def build_node(node: DictConfig, **runtime_arguments: Any) -> Any:
    """`hydra.utils.instantiate`, but a constructor's own clear error reaches the user unwrapped.

    Our constructors raise `ValueError`/`TypeError`/`FileNotFoundError` with messages that name
    the config key; Hydra would bury them in an `InstantiationException` with its own framing.
    """
    try:
        return instantiate(node, **runtime_arguments)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError | FileNotFoundError):
            raise cause.with_traceback(None) from None
        raise
