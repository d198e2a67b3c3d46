"""The drift review's config-flag audit.

For a run's recorded config (and for a config file, with the loader's sources) it
names the keys that are

* unknown: not a setting of this version (retired, misspelt, or from a newer one);
* set but unused: given a value other than the default, yet without effect under the
  rest of that config (``UNUSED_WHEN``: e.g. ``time_in_force`` with market orders);
* changed between the baseline and the current run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from perpsbot.config.loader import PROFILE_DEFAULTS, LoadedConfig
from perpsbot.config.model import BotConfig, Profile

Settings = Mapping[str, Any]

_SIM_ONLY = ("seed", "sim_starting_cash", "sim_order_latency_ms")
_VENUE_ONLY = (
    "api_key_name", "api_private_key", "api_key_file", "ca_bundle", "stream_level", "mark_source",
    "stream_quiet_seconds",
)
_COINBASE_ONLY = ("coinbase_rest_url", "coinbase_ws_url", "coinbase_ws_user_url")
_GATEWAY_ONLY = ("gateway_http_url", "gateway_ws_url", "gateway_stream_url")
_STREAM_TUNING = ("mark_source", "stream_quiet_seconds")
_LIMIT_ONLY = ("time_in_force", "limit_offset_bps")
_OFF_HOURS = ("off_hours_timezone", "night_hours", "weekend_off_hours")

# key -> (why it has no effect, when it has none), read from the run's own values.
UNUSED_WHEN: dict[str, tuple[str, Callable[[Settings], bool]]] = {
    **{k: ("only the built-in simulator reads it; exchange is a venue",
           lambda c: _text(c.get("exchange") or "sim") != "sim") for k in _SIM_ONLY},
    **{k: ("only the venue adapters read it; exchange is the in-process simulator",
           lambda c: _text(c.get("exchange")) == "sim") for k in _VENUE_ONLY},
    **{k: ("only the Coinbase adapter reads it; exchange is not coinbase",
           lambda c: _text(c.get("exchange")) != "coinbase") for k in _COINBASE_ONLY},
    **{k: ("only the gateway adapter reads it; exchange is not gateway",
           lambda c: _text(c.get("exchange")) != "gateway") for k in _GATEWAY_ONLY},
    **{k: ("no effect with stream_level = off",
           lambda c: _text(c.get("stream_level")) == "off") for k in _STREAM_TUNING},
    **{k: ("read only for limit orders; order_type is market",
           lambda c: _text(c.get("order_type")) == "market") for k in _LIMIT_ONLY},
    **{k: ("no effect without off_hours_max_leverage",
           lambda c: c.get("off_hours_max_leverage") is None) for k in _OFF_HOURS},
}


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


@dataclass
class AuditFinding:
    key: str
    kind: str  # unknown | unused | changed
    detail: str


@dataclass
class ConfigAudit:
    where: str  # "baseline run 3", "current run 4", "file bot.toml"
    findings: list[AuditFinding] = field(default_factory=list)


def defaults_for(profile: str) -> dict[str, Any]:
    """Every setting's default under ``profile`` (the profile's own defaults included), as JSON values."""
    try:
        chosen = Profile(profile)
    except ValueError:
        chosen = Profile.PAPER
    values: dict[str, Any] = {}
    for key, spec in BotConfig.model_fields.items():
        values[key] = spec.get_default(call_default_factory=True)
    values.update(PROFILE_DEFAULTS[chosen])
    values["profile"] = chosen
    return {k: _json(v) for k, v in values.items()}


def _json(value: Any) -> Any:
    """The value as the run's recorded config holds it (``model_dump(mode="json")``)."""
    if isinstance(value, SecretStr):
        return "**********"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return _text(value) if hasattr(value, "value") else str(value)


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:  # numbers recorded as strings (Decimal) vs floats
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def audit_run(where: str, config: Settings, profile: str) -> ConfigAudit:
    """Unknown keys, and keys set away from the default without effect, in a run's recorded config."""
    audit = ConfigAudit(where)
    known = set(BotConfig.model_fields)
    defaults = defaults_for(profile)
    for key in sorted(config):
        if key not in known:
            audit.findings.append(AuditFinding(key, "unknown", "not a setting of this version"))
        elif not _same(config[key], defaults[key]) and key in UNUSED_WHEN:
            why, unused = UNUSED_WHEN[key]
            if unused(config):
                audit.findings.append(AuditFinding(key, "unused", f"set to {_shown(config[key])} but {why}"))
    return audit


def audit_changes(baseline: Settings, current: Settings) -> list[AuditFinding]:
    """Keys whose recorded value differs between the two runs."""
    changes = []
    for key in sorted(set(baseline) | set(current)):
        before, after = baseline.get(key, "(absent)"), current.get(key, "(absent)")
        if not _same(before, after):
            changes.append(AuditFinding(key, "changed", f"{_shown(before)} -> {_shown(after)}"))
    return changes




def audit_file(path: Path, raw: Settings, loaded: LoadedConfig) -> ConfigAudit:
    """A config file's unknown keys, and the keys set by the file (or env / flags, as the
    loader's sources say) that have no effect under the effective config."""
    audit = ConfigAudit(f"file {path}")
    known = set(BotConfig.model_fields)
    for key in sorted(set(raw) - known):
        audit.findings.append(AuditFinding(key, "unknown", "not a setting of this version; the bot refuses this file"))
    effective = loaded.config.model_dump(mode="json")
    for key, source in sorted(loaded.sources.items()):
        if source in ("default",) or source.startswith("profile") or key not in UNUSED_WHEN:
            continue
        why, unused = UNUSED_WHEN[key]
        if unused(effective):
            audit.findings.append(AuditFinding(key, "unused", f"set by {source} but {why}"))
    return audit


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, bool):
        return str(value).lower()
    return "-" if value is None else str(value)
