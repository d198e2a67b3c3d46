from __future__ import annotations

import typing
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.config import BotConfig, ConfigError, config_rows, load_config
from perpsbot.config.diff import ConfigChangeRejected, diff_configs


def test_paper_is_the_default_profile_and_trades():
    loaded = load_config(environ={})
    assert loaded.config.profile.value == "paper"
    assert loaded.config.dry_run is False
    assert loaded.sources["dry_run"] == "profile paper"


def test_dev_profile_is_a_dry_run_that_an_absent_flag_cannot_undo():
    # A flag left at None (not given) must not override the profile's dry_run.
    loaded = load_config(environ={}, flags={"profile": "dev", "dry_run": None, "interval": None})
    assert loaded.config.dry_run is True
    assert loaded.sources["dry_run"] == "profile dev"


def test_precedence_profile_file_env_flag(tmp_path: Path):
    toml = tmp_path / "bot.toml"
    toml.write_text('interval = 2.0\nseed = 11\nbar_seconds = 3\nsymbols = ["ETH-USD"]\n')
    env = {"PERPSBOT_SEED": "12", "PERPSBOT_BAR_SECONDS": "4"}
    loaded = load_config(config_file=toml, environ=env, flags={"bar_seconds": 9})
    cfg = loaded.config
    assert (cfg.interval, cfg.seed, cfg.bar_seconds, cfg.symbols) == (2.0, 12, 9, ("ETH-USD",))
    assert loaded.sources["interval"] == f"file {toml}"
    assert loaded.sources["seed"] == "env PERPSBOT_SEED"
    assert loaded.sources["bar_seconds"] == "flag --bar-seconds"
    assert loaded.sources["long_window"] == "default"


def test_config_file_from_environment(tmp_path: Path):
    toml = tmp_path / "bot.toml"
    toml.write_text("interval = 0.5\n")
    assert load_config(environ={"PERPSBOT_CONFIG": str(toml)}).config.interval == 0.5


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PERPSBOT_MAX_LEVERAGE": "abc"},
         "config error: max_leverage = 'abc' (env PERPSBOT_MAX_LEVERAGE): Input should be a valid decimal"),
        ({"PERPSBOT_INTERVAL": "0"},
         "config error: interval = '0' (env PERPSBOT_INTERVAL): Input should be greater than 0"),
        ({"PERPSBOT_PROFILE": "live"},
         "config error: profile = 'live' (env PERPSBOT_PROFILE): must be one of paper, dev, canary, prod"),
        ({"PERPSBOT_SYMBOLS": "BTC/USD"}, "'BTC/USD' is not a product id"),
        ({"PERPSBOT_LONG_WINDOW": "3"}, "short_window (5) must be smaller than long_window (3)"),
        ({"PERPSBOT_LEVERAGE": "5"}, "leverage (5) must not exceed max_leverage (3)"),
        ({"PERPSBOT_TYPO": "1"}, "unknown setting in environment variable PERPSBOT_TYPO"),
    ],
)
def test_bad_values_fail_with_one_line_naming_key_value_and_rule(env, expected):
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_toml_and_unknown_file_keys(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("interval = = 2")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(config_file=broken, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("intreval = 2")
    with pytest.raises(ConfigError, match="unknown setting 'intreval'"):
        load_config(config_file=unknown, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(config_file=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("layer", "key", "value"),
    [
        ("env", "reduce_only", "false"),
        ("env", "max_leverage", "2"),
        ("flag", "leverage", D(2)),
        ("file", "time_in_force", "GTC"),
    ],
)
def test_canary_locks_cannot_be_overridden_from_any_layer(tmp_path: Path, layer, key, value):
    env = {"PERPSBOT_PROFILE": "canary"}
    flags: dict = {}
    config_file = None
    if layer == "env":
        env[f"PERPSBOT_{key.upper()}"] = value
    elif layer == "flag":
        flags[key] = value
    else:
        config_file = tmp_path / "c.toml"
        config_file.write_text(f'{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=f"the canary profile locks {key}"):
        load_config(config_file=config_file, environ=env, flags=flags)


def test_canary_model_refuses_unlocked_values_even_built_directly():
    with pytest.raises(ValueError, match="canary profile locks reduce_only"):
        BotConfig(profile="canary", reduce_only=False, max_leverage=1, time_in_force="IOC")


def test_canary_repeating_a_locked_value_is_fine():
    cfg = load_config(environ={"PERPSBOT_PROFILE": "canary", "PERPSBOT_REDUCE_ONLY": "true"}).config
    assert cfg.reduce_only and cfg.max_leverage == 1 and cfg.time_in_force.value == "IOC"


def test_config_rows_cover_every_key_with_a_source():
    rows = config_rows(load_config(environ={"PERPSBOT_SEED": "3"}))
    keys = [key for key, _, _ in rows]
    assert keys == list(BotConfig.model_fields)
    assert ("seed", "3", "env PERPSBOT_SEED") in rows


def test_diff_lists_symbol_changes_and_refuses_restart_keys():
    old = BotConfig(symbols=("BTC-USD", "ETH-USD"))
    new = BotConfig(symbols=("ETH-USD", "SOL-USD"), interval=2)
    change = diff_configs(old, new)
    assert change.added_symbols == ("SOL-USD",)
    assert change.removed_symbols == ("BTC-USD",)
    assert change.changed_keys == {"symbols", "interval"}
    with pytest.raises(ConfigChangeRejected, match="seed needs a restart"):
        diff_configs(old, BotConfig(symbols=old.symbols, seed=99))
    with pytest.raises(ConfigChangeRejected, match="sim_order_latency_ms needs a restart"):
        diff_configs(old, BotConfig(symbols=old.symbols, sim_order_latency_ms=50))


def test_settings_read_only_at_start_need_a_restart_and_the_rest_change_live():
    old = BotConfig(symbols=("BTC-USD",))
    # The run's length and the log level are taken once by `perpsbot run`: a live change did nothing.
    with pytest.raises(ConfigChangeRejected, match=r"^duration, log_level need a restart$"):
        diff_configs(old, BotConfig(symbols=old.symbols, duration=60, log_level="DEBUG"))
    live = BotConfig(symbols=old.symbols, max_position_notional=1000, stream_level="ticker", backup_keep=3)
    assert diff_configs(old, live).changed_keys == {"max_position_notional", "stream_level", "backup_keep"}


def test_sim_order_latency_is_bounded():
    with pytest.raises(ValueError, match="sim_order_latency_ms"):
        BotConfig(sim_order_latency_ms=-1)
    assert BotConfig(sim_order_latency_ms=250).sim_order_latency_ms == 250.0


def test_secrets_are_masked_in_shown_values():
    from pydantic import SecretStr

    from perpsbot.config.loader import mask

    assert mask(SecretStr("-----BEGIN EC PRIVATE KEY-----")) == "**********"
    assert mask(None) == "-"


def _numeric_settings() -> dict[str, type]:
    """Every setting that takes one number (int, float or Decimal, optionally none)."""
    found = {}
    for key, field in BotConfig.model_fields.items():
        kinds = {int, float, D} & set(typing.get_args(field.annotation) or (field.annotation,))
        if kinds and typing.get_origin(field.annotation) is not dict:
            found[key] = kinds.pop()
    return found


def test_every_numeric_setting_refuses_booleans_and_numbers_a_float_cannot_hold(tmp_path: Path):
    numeric = _numeric_settings()
    assert len(numeric) > 40 and {"interval", "duration", "trailing_stop_pct", "seed"} <= set(numeric)
    toml = tmp_path / "bot.toml"
    for key in numeric:
        for literal, why in (("true", "must be a number, not true"), ("1e-400", "too small to tell from 0"),
                             ("1e309", "too large"), ("inf", "must be a finite number"),
                             ("nan", "must be a finite number")):
            toml.write_text(f"{key} = {literal}\n")
            with pytest.raises(ConfigError) as caught:
                load_config(config_file=toml, environ={})
            message = str(caught.value)
            assert message.startswith(f"config error: {key} = ") and f"(file {toml})" in message, message
            assert why in message and "\n" not in message, message
    # the same from the environment and the command line, and whole numbers beyond SQLite's INTEGER
    for layer in ({"environ": {"PERPSBOT_DURATION": "1e309"}}, {"environ": {}, "flags": {"duration": float("inf")}}):
        with pytest.raises(ConfigError, match=r"duration = .*: (is too large|must be a finite number)"):
            load_config(**layer)
    with pytest.raises(ConfigError, match=r"seed = '99999999999999999999' .*too large: at most 9223372036854775807"):
        load_config(environ={"PERPSBOT_SEED": "99999999999999999999"})
    with pytest.raises(ConfigError, match="BTC-USD: 'inf' must be a finite number"):
        load_config(environ={"PERPSBOT_SYMBOL_MAX_NOTIONAL": "BTC-USD=inf"})
    # ordinary values still load, TOML floats exactly
    toml.write_text("interval = 0.5\ntrailing_stop_pct = 0.015\nduration = 1e6\nseed = 0\n")
    cfg = load_config(config_file=toml, environ={}).config
    assert (cfg.interval, cfg.trailing_stop_pct, cfg.duration, cfg.seed) == (0.5, D("0.015"), 1e6, 0)
