"""What changed between two configs, for ``PerpsBot.apply_config_change``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from perpsbot.config.model import BotConfig
from perpsbot.redact import public_config


def _needs_restart(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("restart") is True


# The command ``perpsbot config set`` posts; the bot applies it between cycles.
CONFIG_SET = "config_set"

# The settings marked ``RESTART`` in the model: they choose the exchange, the stores, the market,
# the HTTP port or the log, or are checked against the venue when the bot is built.
RESTART_KEYS = frozenset(key for key, field in BotConfig.model_fields.items() if _needs_restart(field))


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


def restart_refusal(keys: Iterable[str]) -> str | None:
    """"KEY needs a restart" for the restart keys among ``keys`` (None: none of them is one)."""
    needs_restart = sorted(set(keys) & RESTART_KEYS)
    if not needs_restart:
        return None
    return f"{', '.join(needs_restart)} {'needs' if len(needs_restart) == 1 else 'need'} a restart"


def diff_configs(old: BotConfig, new: BotConfig) -> ConfigChange:
    changed = frozenset(k for k in BotConfig.model_fields if getattr(old, k) != getattr(new, k))
    refusal = restart_refusal(changed)
    if refusal is not None:
        raise ConfigChangeRejected(refusal)
    return ConfigChange(
        added_symbols=tuple(s for s in new.symbols if s not in old.symbols),
        removed_symbols=tuple(s for s in old.symbols if s not in new.symbols),
        changed_keys=changed,
    )


def shown_changes(old: BotConfig, new: BotConfig, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{key: {"old": ..., "new": ...}}`` as a run records its config: JSON values, secrets redacted."""
    before, after = public_config(old), public_config(new)
    return {key: {"old": before[key], "new": after[key]} for key in sorted(keys)}


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    """One line: ``max_position_notional 50000 -> 20000; symbols BTC-USD -> BTC-USD,ETH-USD``."""
    return "; ".join(f"{key} {_shown(values['old'])} -> {_shown(values['new'])}" for key, values in changes.items())


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
