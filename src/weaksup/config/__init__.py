"""Config validation and the helpers that turn a composed config into objects."""

from weaksup.config.validation import ConfigError, validate_config

__all__ = ["ConfigError", "validate_config"]
