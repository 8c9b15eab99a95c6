"""Drop third-party console messages that tell a weaksup user nothing; import once per entry point.

    import weaksup.quiet  # noqa: F401  (before any Trainer is built)

Only named messages are dropped, each where it is emitted; everything else Lightning
says (devices, why fit stopped, which checkpoint is tested, its warnings) still reaches the
user. W&B's two deprecation warnings are avoided where they start instead
(`weaksup.run_logging.QuietWandbLogger`): wandb prints them without going through `logging`.
"""

from __future__ import annotations

import logging
import warnings

# Lightning's `rank_zero_info` logs here (pytorch_lightning re-points the shared helper at its own
# logger on import; lightning_fabric's is listed for code that logs through fabric first).
RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)

DROPPED_MESSAGE_PREFIXES = (
    # Advertisements for litlogger / litmodels, printed by every Trainer (and every fit).
    "💡 Tip:",
    # Our callbacks group brings its own model summary on purpose; Lightning says it skips its own.
    "Trainer already configured with model summary callbacks",
)


class DropMessages(logging.Filter):
    """A logger filter that drops records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


LIGHTNING_CHATTER = DropMessages(DROPPED_MESSAGE_PREFIXES)


def install() -> None:
    """Attach the filters (idempotent: importing this module already did)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if LIGHTNING_CHATTER not in logger.filters:
            logger.addFilter(LIGHTNING_CHATTER)
    # Lightning 2.6 + torch 2.13 warn on every fit about a pytree API Lightning still uses.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
    )


install()
