"""A user's strategy on a running bot: a parameter changed live stays on the same
strategy object; a strategy that raises holds its symbols, is counted, the bot cycles on."""

from __future__ import annotations

import pytest

from perpsbot.bot import BotError
from perpsbot.config.diff import ConfigChangeRejected
from perpsbot.strategy.base import Target

STRATEGY = '''
from perpsbot.strategy.api import Param, Strategy, hold


class Steady(Strategy):
    level = Param(int, 3, low=1, high=9)

    def on_bar(self, ctx):
        if self.level == 9:
            raise RuntimeError("level 9 is broken")
        return hold(f"level {self.level}")
'''


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "steady.py"
    path.write_text(STRATEGY)
    return f"{path}:Steady"


async def test_a_parameter_changed_on_the_running_bot_changes_on_the_same_strategy(make_bot, make_config, spec):
    bot = await make_bot(strategy=spec, strategy_params={"level": "4"})
    reg = bot.registry
    runner, strategy = reg.strategy.strategy, reg.strategy.strategy.user
    assert reg.events.query(kind="bot_started")[0].data["strategy_params"] == {"level": 4}
    await bot.apply_config_change(make_config(strategy=spec, strategy_params={"level": "6"}))
    assert reg.strategy.strategy is runner and runner.user is strategy and strategy.level == 6
    changed = reg.events.query(kind="config_changed")[0].data
    assert changed["keys"] == ["strategy_params"] and changed["strategy_params"] == {"level": 6}
    with pytest.raises(BotError, match="parameter level = '10': must be at most 9"):
        await bot.apply_config_change(make_config(strategy=spec, strategy_params={"level": "10"}))
    with pytest.raises(ConfigChangeRejected, match="strategy needs a restart"):
        await bot.apply_config_change(make_config(strategy="rsi_reversion"))
    assert strategy.level == 6 and bot.summary()["strategy_params"] == {"level": 6}
    # The MA crossover's window settings changed: not a reason to swap this strategy for it.
    await bot.apply_config_change(make_config(strategy=spec, strategy_params={"level": "6"}, long_window=7))
    assert reg.strategy.strategy is runner and type(runner.user).__name__ == "Steady"


async def test_a_strategy_that_raises_on_every_bar_holds_is_counted_and_the_bot_cycles_on(make_bot, clock, spec):
    bot = await make_bot(strategy=spec, strategy_params={"level": "9"})
    for _ in range(6):
        clock.advance(1.0)
        report = await bot.run_cycle()
        assert all(d.target is Target.HOLD for d in report.decisions.values()) and not report.errors
    errors = bot.registry.events.query(kind="error")
    assert errors and all(e.data["stage"] == "strategy" and "level 9 is broken" in e.data["error"] for e in errors)
    assert bot.summary()["strategy_errors"] == len(errors) == bot.registry.strategy.strategy.errors
    assert f'perpsbot_strategy_errors_total{{symbol="{errors[0].symbol}"}}' in bot.metrics.render().decode()
