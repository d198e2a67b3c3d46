"""Layered configuration: defaults < profile < TOML file < ``PERPSBOT_*`` env < ``--set`` /
``--param`` < a command's own flags (``--interval``, ``--strategy``, ...).

Each layer holds only the keys it really sets, so a flag the user did not give
can never override a lower layer. Every effective value remembers its source.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr, TypeAdapter, ValidationError

from perpsbot.config.model import CANARY_LOCKS, BotConfig, Profile, _show, parse_pairs

ENV_PREFIX = "PERPSBOT_"
# Variables that steer loading itself rather than naming a setting.
ENV_META = {"PERPSBOT_CONFIG"}

PROFILE_DEFAULTS: dict[Profile, dict[str, Any]] = {
    Profile.PAPER: {"exchange": "sim", "dry_run": False},
    Profile.DEV: {"exchange": "sim", "dry_run": True, "log_level": "DEBUG"},
    Profile.CANARY: {
        "exchange": "sim",
        "dry_run": False,
        "daily_loss_limit": Decimal(100),
        "position_fraction": Decimal("0.01"),
        "max_position_notional": Decimal(1_000),
        **CANARY_LOCKS,
    },
    Profile.PROD: {"exchange": "coinbase", "dry_run": False, "mark_staleness_seconds": 5.0},
}


# Settings whose values are never shown, not even in an error about them: the SecretStr
# ones, and the API key name (a plain string, as the Coinbase client needs it, but a
# credential all the same).
SECRET_KEYS = frozenset(
    {k for k, f in BotConfig.model_fields.items() if "SecretStr" in str(f.annotation)} | {"api_key_name"}
)
MASK = "**********"
# Settings whose NAME=VALUE pairs add up over the layers (a --param changes one
# parameter, the file's others stay) instead of one layer replacing the other's.
MERGED_KEYS = frozenset({"strategy_params"})


class ConfigError(ValueError):
    """A configuration problem, worded for the user in one line."""


@dataclass(frozen=True)
class Layer:
    name: str  # "profile:canary", "file:bot.toml", "env", "flag"
    values: Mapping[str, Any]
    sources: Mapping[str, str]  # key -> precise origin, e.g. "env PERPSBOT_INTERVAL"


@dataclass(frozen=True)
class LoadedConfig:
    config: BotConfig
    sources: dict[str, str]


def _known_keys() -> set[str]:
    return set(BotConfig.model_fields)


def _check_keys(values: Mapping[str, Any], origin: str) -> None:
    unknown = sorted(set(values) - _known_keys())
    if unknown:
        raise ConfigError(f"config error: unknown setting '{unknown[0]}' in {origin}")


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's values; a missing, unreadable or malformed file is one line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config error: cannot read config file {path}: {exc.strerror}") from None
    try:
        # Floats as Decimal: the literal as written, so that 1e-400 or 1e309 is refused as
        # out of range rather than read as 0 or infinity.
        return tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config error: {path} is not valid TOML: {exc}") from None


def file_layer(path: Path, values: Mapping[str, Any] | None = None, *, drop_unknown: bool = False) -> Layer:
    """A config file's layer. ``values``: the file's, when already read; ``drop_unknown``:
    leave unknown keys out (for a caller that reports them) instead of refusing them."""
    values = read_toml(path) if values is None else values
    nested = [k for k, v in values.items() if isinstance(v, dict) and k not in MERGED_KEYS]
    if nested:
        raise ConfigError(f"config error: {path}: sections are not supported, found [{nested[0]}]")
    origin = f"file {path}"
    if drop_unknown:
        values = {k: v for k, v in values.items() if k in _known_keys()}
    else:
        _check_keys(values, origin)
    return Layer(f"file:{path}", dict(values), {k: origin for k in values})


def env_layer(environ: Mapping[str, str]) -> Layer:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_META:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _known_keys():
            raise ConfigError(f"config error: unknown setting in environment variable {name}")
        values[key] = value
        sources[key] = f"env {name}"
    return Layer("env", values, sources)


def flag_layer(flags: Mapping[str, Any]) -> Layer:
    given = {k: v for k, v in flags.items() if v is not None}
    _check_keys(given, "command-line flags")
    return Layer("flag", given, {k: f"flag --{k.replace('_', '-')}" for k in given})


def set_layer(values: Mapping[str, Any]) -> Layer:
    """``--set KEY=VALUE`` (and ``--param``): below the command's own flags, above the rest."""
    _check_keys(values, "--set")
    return Layer("set", dict(values), {k: f"--set {k}" for k in values})


def _profile_of(layers: list[Layer]) -> tuple[Profile, str]:
    profile_value: Any = Profile.PAPER.value
    source = "default"
    for layer in layers:
        if "profile" in layer.values:
            profile_value = layer.values["profile"]
            source = layer.sources["profile"]
    try:
        return Profile(str(profile_value).lower()), source
    except ValueError:
        allowed = ", ".join(p.value for p in Profile)
        raise ConfigError(
            f"config error: profile = '{profile_value}' ({source}): must be one of {allowed}"
        ) from None


def _check_locks(profile: Profile, merged: dict[str, Any], sources: dict[str, str]) -> None:
    """Name the layer that tried to loosen a canary lock (the model refuses it too)."""
    if profile is not Profile.CANARY:
        return
    for key, locked in CANARY_LOCKS.items():
        if sources.get(key, "").startswith("profile"):
            continue
        field_type = BotConfig.model_fields[key].annotation
        assert field_type is not None  # every BotConfig field is annotated
        try:
            value = TypeAdapter(field_type).validate_python(merged[key])
        except ValidationError:
            value = merged[key]
        if value != locked:
            raise ConfigError(
                f"config error: the canary profile locks {key} = {_show(locked)}; "
                f"{sources[key]} tried to set {_show_input(merged[key], key)}"
            )


def explain_validation(exc: ValidationError, merged: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        message = err["msg"].removeprefix("Value error, ")
        if key:
            value = merged.get(key, err.get("input"))
            origin = sources.get(key, "default")
            lines.append(f"config error: {key} = {_show_input(value, key)} ({origin}): {message}")
        else:
            lines.append(f"config error: {message}")
    return "\n".join(lines)


def _show_input(value: Any, key: str = "") -> str:
    """A value as the user gave it, for an error; never a secret's."""
    if isinstance(value, SecretStr) or key in SECRET_KEYS:
        return f"'{MASK}'"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "'" + ",".join(str(v) for v in value) + "'"
    return repr(value) if isinstance(value, str) else str(value)


def build_config(layers: list[Layer]) -> LoadedConfig:
    profile, profile_source = _profile_of(layers)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    base = Layer(
        f"profile:{profile.value}",
        PROFILE_DEFAULTS[profile],
        {k: f"profile {profile.value}" for k in PROFILE_DEFAULTS[profile]},
    )
    for layer in [base, *layers]:
        for key, value in layer.values.items():
            merged[key] = _merged(key, merged.get(key), value, layer.sources[key])
        sources.update(layer.sources)
    merged["profile"] = profile
    sources["profile"] = profile_source
    _check_locks(profile, merged, sources)
    try:
        config = BotConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(explain_validation(exc, merged, sources)) from None
    all_sources = {key: sources.get(key, "default") for key in BotConfig.model_fields}
    return LoadedConfig(config, all_sources)


def _merged(key: str, below: Any, value: Any, origin: str) -> Any:
    if key not in MERGED_KEYS:
        return value
    pairs = [below or {}, value]
    try:
        parsed = [parse_pairs(p) if isinstance(p, str) else dict(p) for p in pairs]
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config error: {key} = {_show_input(value, key)} ({origin}): {exc}") from None
    return {**parsed[0], **parsed[1]}


def load_config(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Load the effective config. ``config_file`` falls back to ``$PERPSBOT_CONFIG``."""
    environ = os.environ if environ is None else environ
    layers: list[Layer] = []
    if config_file is None and environ.get("PERPSBOT_CONFIG"):
        config_file = Path(environ["PERPSBOT_CONFIG"])
    if config_file is not None:
        layers.append(file_layer(config_file))
    layers.append(env_layer(environ))
    layers.append(set_layer(sets or {}))
    layers.append(flag_layer(flags or {}))
    return build_config(layers)


def overlay(config: BotConfig, values: Mapping[str, Any], origin: str) -> BotConfig:
    """``config`` with ``values`` on top, validated as ``build_config`` validates a layer over
    the ones below it (``perpsbot config set``: the running bot's config, then the user's keys,
    errors naming ``origin``)."""
    _check_keys(values, origin)
    running: dict[str, Any] = {key: getattr(config, key) for key in BotConfig.model_fields}
    running["profile"] = config.profile.value
    return build_config([
        Layer("running", running, dict.fromkeys(running, "running bot")),
        Layer(origin, dict(values), dict.fromkeys(values, origin)),
    ]).config


def config_rows(loaded: LoadedConfig) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for every setting, secrets masked."""
    rows = []
    for key in BotConfig.model_fields:
        value = getattr(loaded.config, key)
        shown = MASK if key in SECRET_KEYS and isinstance(value, str) and value else mask(value)
        rows.append((key, shown, loaded.sources[key]))
    return rows


def mask(value: Any) -> str:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return _show(value)
