"""Config: YAML into pydantic, then every provider's own settings validated once plugins are loaded."""

from vocable.config.loader import ConfigError, load_yaml, parse_config
from vocable.config.model import ProviderRef, VocableConfig
from vocable.config.resolve import ProviderChoice, ResolvedConfig, redacted, resolve

__all__ = [
    "ConfigError",
    "ProviderChoice",
    "ProviderRef",
    "ResolvedConfig",
    "VocableConfig",
    "load_yaml",
    "parse_config",
    "redacted",
    "resolve",
]
