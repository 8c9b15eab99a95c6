"""Config validation and the helpers that turn a composed config into objects."""

from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError, validate_config

__all__ = ["ConfigError", "build_node", "validate_config"]
