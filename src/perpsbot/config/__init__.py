from perpsbot.config.loader import ConfigError, LoadedConfig, config_rows, load_config
from perpsbot.config.model import BotConfig, ExchangeKind, Profile

__all__ = ["BotConfig", "ConfigError", "ExchangeKind", "LoadedConfig", "Profile", "config_rows", "load_config"]
