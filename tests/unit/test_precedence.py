"""One precedence for every setting that has a flag of its own: defaults < profile <
config file < PERPSBOT_* env < --set / --param < the command's flag."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from perpsbot.backtest.runner import BacktestSpec, backtest_config
from perpsbot.cli.common import UserError
from perpsbot.cli.run import run_config

# key: (file, env, --set, flag) values, each a different valid value
RUN_FLAGS = {
    "profile": ("canary", "dev", "paper", "dev"),
    "symbols": ("BTC-USD", "ETH-USD", "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"),
    "interval": ("0.5", "0.4", "0.2", "0.3"),
    "duration": ("50", "40", "20", "30"),
    "seed": ("5", "4", "2", "3"),
    "strategy": ("rsi_reversion", "donchian_breakout", "funding_carry", "ma_crossover"),
}


def toml(key: str, value: str) -> str:
    return f'{key} = "{value}"\n' if key in ("profile", "symbols", "strategy") else f"{key} = {value}\n"


def loaded(monkeypatch, tmp_path, key, *, file=None, env=None, set_=None, flag=None):
    for name in [k for k in __import__("os").environ if k.startswith("PERPSBOT_")]:
        monkeypatch.delenv(name)
    config_file = None
    if file is not None:
        config_file = tmp_path / "bot.toml"
        config_file.write_text(toml(key, file))
    if env is not None:
        monkeypatch.setenv(f"PERPSBOT_{key.upper()}", env)
    named = {k: None for k in RUN_FLAGS}
    if flag is not None:
        named[key] = flag
    result = run_config(named, [f"{key}={set_}"] if set_ is not None else None, None, config_file)
    value = getattr(result.config, key)
    return value, result.sources[key]


def same(value, text: str) -> bool:
    if isinstance(value, tuple):
        return ",".join(value) == text
    if isinstance(value, float):
        return value == float(text)
    return getattr(value, "value", str(value)) == text


@pytest.mark.parametrize("key", list(RUN_FLAGS))
def test_each_layer_overrides_the_one_below_for_every_run_flag(monkeypatch, tmp_path, key):
    file, env, set_, flag = RUN_FLAGS[key]
    value, source = loaded(monkeypatch, tmp_path, key, file=file)
    assert same(value, file) and source == f"file {tmp_path / 'bot.toml'}"
    value, source = loaded(monkeypatch, tmp_path, key, file=file, env=env)
    assert same(value, env) and source == f"env PERPSBOT_{key.upper()}"
    value, source = loaded(monkeypatch, tmp_path, key, file=file, env=env, set_=set_)
    assert same(value, set_) and source == f"--set {key}"  # named as the user gave it
    value, source = loaded(monkeypatch, tmp_path, key, file=file, env=env, set_=set_, flag=flag)
    assert same(value, flag) and source == f"flag --{key}"


@pytest.mark.parametrize(("key", "bad"), [("interval", "0"), ("duration", "0"), ("seed", "-1"), ("symbols", "b@d"),
                                          ("profile", "live")])
def test_a_bad_value_is_refused_the_same_by_set_as_by_the_flag(monkeypatch, tmp_path, key, bad):
    with pytest.raises(UserError) as by_set:
        loaded(monkeypatch, tmp_path, key, set_=bad)
    with pytest.raises(UserError) as by_flag:
        loaded(monkeypatch, tmp_path, key, flag=bad)
    assert str(by_set.value).replace(f"--set {key}", "X") == str(by_flag.value).replace(f"flag --{key}", "X")
    assert f"(--set {key})" in str(by_set.value)


def test_a_param_changes_one_strategy_parameter_and_keeps_the_files_others(monkeypatch, tmp_path):
    config_file = tmp_path / "bot.toml"
    config_file.write_text('strategy = "rsi_reversion"\nstrategy_params = { period = 9, oversold = 25 }\n')
    named = {k: None for k in RUN_FLAGS}
    result = run_config(named, None, ["oversold=20", "bar_seconds=2"], config_file)
    assert result.config.strategy_params == {"period": "9", "oversold": "20"}
    assert result.config.bar_seconds == 2  # a --param naming a bot setting sets it


def test_the_backtest_flags_beat_param_as_on_run(tmp_path):
    spec = BacktestSpec(("BTC-USD",), params={"sim_starting_cash": "500", "strategy": "rsi_reversion"},
                        starting_cash=D(800), strategy="donchian_breakout")
    config = backtest_config(spec, 60, tmp_path)
    assert config.sim_starting_cash == D(800) and config.strategy == "donchian_breakout"


def test_symbols_nobody_set_are_the_ones_the_strategy_declares(monkeypatch, tmp_path):
    strategy = tmp_path / "eth.py"
    strategy.write_text("from perpsbot.strategy.api import Strategy\n\n\nclass Eth(Strategy):\n"
                        "    symbols = ('ETH-USD', 'ETP-20DEC30-CDE')\n")
    named = {k: None for k in RUN_FLAGS}
    monkeypatch.delenv("PERPSBOT_SYMBOLS", raising=False)
    result = run_config({**named, "strategy": f"{strategy}:Eth"}, None, None, None)
    assert result.config.symbols == ("ETH-USD", "ETP-20DEC30-CDE") and result.sources["symbols"] == "strategy Eth"
    given = run_config({**named, "strategy": f"{strategy}:Eth", "symbols": "ETH-USD"}, None, None, None)
    assert given.config.symbols == ("ETH-USD",) and given.sources["symbols"] == "flag --symbols"
