"""What changed between two configs, for ``PerpsBot.apply_config_change``."""

from __future__ import annotations

from dataclasses import dataclass

from perpsbot.config.model import BotConfig

# Keys that need a fresh process (they choose the exchange, the stores, the market or the HTTP port;
# margin_type is checked against the venue when the bot is built).
RESTART_KEYS = frozenset({
    "profile", "exchange", "data_dir", "seed", "sim_starting_cash", "sim_order_latency_ms", "margin_type",
    "api_key_name", "api_private_key", "api_key_file",
    "coinbase_rest_url", "coinbase_ws_url", "coinbase_ws_user_url", "ca_bundle", "http_port", "dashboard_token",
    "log_file", "log_file_max_bytes", "log_file_backups", "backup_every_minutes",
})


@dataclass(frozen=True)
class ConfigChange:
    added_symbols: tuple[str, ...]
    removed_symbols: tuple[str, ...]
    changed_keys: frozenset[str]

    @property
    def is_empty(self) -> bool:
        return not self.changed_keys


class ConfigChangeRejected(ValueError):
    pass


def diff_configs(old: BotConfig, new: BotConfig) -> ConfigChange:
    changed = frozenset(k for k in BotConfig.model_fields if getattr(old, k) != getattr(new, k))
    needs_restart = sorted(changed & RESTART_KEYS)
    if needs_restart:
        raise ConfigChangeRejected(
            f"{', '.join(needs_restart)} cannot change while the bot runs; restart it instead"
        )
    return ConfigChange(
        added_symbols=tuple(s for s in new.symbols if s not in old.symbols),
        removed_symbols=tuple(s for s in old.symbols if s not in new.symbols),
        changed_keys=changed,
    )
