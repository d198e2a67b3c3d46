"""The strategy API: parameters checked at start-up, timeframes built from base bars,
indicators fed from the bars held, answers checked, a failing strategy isolated."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from talipp.indicators import SMA

from perpsbot.config import BotConfig
from perpsbot.domain import Position, Product, ProductType
from perpsbot.market.windows import MarkWindow
from perpsbot.strategy import loading
from perpsbot.strategy.api import Context, Param, Signal, Strategy, go_long, hold
from perpsbot.strategy.base import MarketView, OrderKind, Target
from perpsbot.strategy.runner import MarketInputs, StrategyError, StrategyRunner

E0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
BTC = Product("BTC-USD", "BTC", "USD", ProductType.SPOT, D("0.0001"), D("0.01"), D("0.0001"))


class Answer(Strategy):
    """Answers what the test puts in ``reply`` (a value, or a callable of the context)."""

    reply: object = None
    level = Param(int, 3, low=1, high=10)

    def on_bar(self, ctx: Context) -> Signal | None:
        reply = type(self).reply
        return reply(ctx) if callable(reply) else reply  # type: ignore[return-value]


def runner_for(strategy: Strategy, base: int = 60, budget: float | None = None) -> tuple[StrategyRunner, list]:
    runner = StrategyRunner(strategy, base, budget_ms=budget, spec="test")
    reported: list[tuple[str, str]] = []
    inputs = MarketInputs(lambda: datetime.now(UTC), lambda: D(1000), lambda s: None, lambda s: None, {"BTC-USD": BTC})
    runner.bind(inputs, lambda symbol, error: reported.append((symbol, error)))
    return runner, reported


def window_of(closes: list[float], seconds: int = 60, volume: float = 2.0) -> MarkWindow:
    window = MarkWindow(max_marks=10, max_bars=100, bar_seconds=seconds)
    for i, close in enumerate(closes):
        window.append_bar(E0 + seconds * i, close, close + 1, close - 1, close, volume)
    return window


def view(window: MarkWindow, position: Position | None = None) -> MarketView:
    return MarketView("BTC-USD", None, D(repr(window.last_close)), True, position, False, True, window)


def answer(reply: object, **kw) -> tuple[object, list]:
    Answer.reply = reply
    runner, reported = runner_for(Answer(), **kw)
    decision = runner.decide(view(window_of([100.0, 101, 102])))
    return (decision, runner, reported)


# ----- parameters ---------------------------------------------------------------------


def test_parameters_come_from_strategy_params_then_a_setting_of_the_same_name_then_the_default():
    config = BotConfig(strategy="rsi_reversion", strategy_params={"period": "21"})
    assert loading.parameters(loading.resolve("rsi_reversion"), config)["period"] == 21
    ma = loading.build(BotConfig(short_window=3, long_window=9))
    assert ma.params == {"short_window": 3, "long_window": 9, "trailing_stop_pct": D("0.01")}
    assert ma.name == "ma_crossover" and ma.required_bars == 10


@pytest.mark.parametrize(("params", "message"), [
    ({"period": "x"}, "strategy rsi_reversion: parameter period = 'x': expected a whole number"),
    ({"period": "1"}, "strategy rsi_reversion: parameter period = '1': must be at least 2"),
    ({"period": "2.5"}, "parameter period = '2.5': expected a whole number"),
    ({"oversold": "45", "exit_level": "40"}, "strategy rsi_reversion: need oversold < exit_level < overbought"),
    ({"perod": "3"}, "strategy rsi_reversion has no parameter 'perod' (its parameters: period, oversold, overbought"),
])
def test_a_bad_parameter_is_one_line_naming_it(params, message):
    with pytest.raises(StrategyError) as caught:
        loading.build(BotConfig(strategy="rsi_reversion", strategy_params=params))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_declared_default_outside_its_range_is_refused_at_start_up():
    broken = type("Broken", (Strategy,), {"bad": Param(int, 0, low=1)})
    with pytest.raises(StrategyError, match="strategy Broken: parameter bad = 0: must be at least 1"):
        loading.parameters(broken, BotConfig())


# ----- bars, timeframes, indicators ----------------------------------------------------


class TwoFrames(Strategy):
    timeframes = ("5m",)
    seen: list = []  # noqa: RUF012 - the test reads what the strategy saw

    def warmup(self) -> int:
        return 2

    def on_bar(self, ctx: Context) -> Signal | None:
        TwoFrames.seen.append((len(ctx.bars), ctx.closed("5m"), list(ctx.bars_of("5m"))))
        return None


def test_a_longer_timeframe_is_built_from_the_base_bars_with_volume():
    TwoFrames.seen = []
    runner, _ = runner_for(TwoFrames(), base=60)
    assert runner.required_bars == 2 * 5 + 4
    window = MarkWindow(max_marks=10, max_bars=100, bar_seconds=60)
    for i in range(15):
        window.append_bar(E0 + 60 * i, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1.0 + i)
        runner.decide(view(window))
    closes_5m = [(b, closed, [(r.open, r.high, r.low, r.close, r.volume) for r in frames])
                 for b, closed, frames in TwoFrames.seen]
    # The first on_bar: two 5m bars closed (minutes 0-4 and 5-9), on the bar that closed the second.
    assert closes_5m[0] == (10, True, [(100.0, 105.0, 99.0, 104.5, 15.0), (105.0, 110.0, 104.0, 109.5, 40.0)])
    assert [closed for _, closed, _ in closes_5m] == [True, False, False, False, False, True]


def test_a_timeframe_that_is_not_a_multiple_of_the_bar_is_refused():
    class Odd(Strategy):
        timeframes = ("90s",)

    with pytest.raises(StrategyError, match=r"timeframe 90s is not a multiple of bar_seconds \(60 s\)"):
        StrategyRunner(Odd(), 60, budget_ms=None, spec="odd")


def test_an_indicator_made_late_is_fed_the_bars_held_then_one_bar_at_a_time():
    class Late(Strategy):
        def on_bar(self, ctx: Context) -> Signal | None:
            ctx.state["sma"] = ctx.indicator(SMA, 4)[-1] if len(ctx.bars) >= 6 else None
            return None

    strategy = Late()
    runner, _ = runner_for(strategy)
    closes = [100.0, 103, 99, 98, 104, 110, 111, 95, 90]
    window = MarkWindow(max_marks=10, max_bars=100, bar_seconds=60)
    for i, close in enumerate(closes):
        window.append_bar(E0 + 60 * i, close, close, close, close)
        runner.decide(view(window))
        held = runner._symbols["BTC-USD"].ctx.state["sma"]
        if i >= 5:
            assert math.isclose(held, sum(closes[i - 3 : i + 1]) / 4), i


# ----- answers and isolation ------------------------------------------------------------


def test_a_signal_carries_its_size_order_type_and_protective_levels_into_the_decision():
    decision, _, reported = answer(go_long("up", fraction=0.25, order="limit", limit_offset_bps=3, stop_loss=90.0,
                                           take_profit=120, trailing_stop=0.02))
    assert decision.target is Target.LONG and reported == []
    plan = decision.plan
    assert (plan.fraction, plan.order, plan.limit_offset_bps, plan.stop_loss, plan.take_profit) == (
        D("0.25"), OrderKind.LIMIT, D(3), D("90.0"), D(120))
    assert plan.recorded()["trailing_stop"] == D("0.02")
    assert answer(go_long("plain"))[0].plan is None  # the bot's own sizing and order type


@pytest.mark.parametrize(("reply", "error"), [
    ("buy", "answered nonsense: str instead of a Signal (or None)"),
    (Signal("LONG"), "answered nonsense: target 'LONG' is not a Target"),  # type: ignore[arg-type]
    (go_long(fraction=2), "fraction 2 is not in (0, 1]"),
    (go_long(fraction=float("nan")), "fraction nan is not a finite number"),
    (go_long(fraction=0.1, quantity=1), "both a fraction and a quantity"),
    (go_long(stop_loss=110), "stop_loss 110 is not on the losing side of the mark 102 for LONG"),
    (go_long(take_profit=90), "take_profit 90 is not on the winning side"),
    (go_long(limit_offset_bps=5), "limit_offset_bps 5 needs a limit order"),
    (go_long(order="iceberg"), "order 'iceberg' is not market, limit or post_only"),
    (lambda ctx: 1 / 0, "raised ZeroDivisionError: division by zero"),
])
def test_a_strategy_that_raises_or_answers_nonsense_holds_its_symbol_and_is_counted(reply, error):
    decision, runner, reported = answer(reply)
    assert decision.target is Target.HOLD and error in decision.reason
    assert runner.errors == 1 and runner.errors_by_symbol == {"BTC-USD": 1}
    assert len(reported) == 1 and reported[0][0] == "BTC-USD" and error in reported[0][1]


def test_a_slow_strategy_is_interrupted_at_its_budget():
    started = time.perf_counter()
    decision, runner, reported = answer(lambda ctx: time.sleep(5), budget=50)
    assert time.perf_counter() - started < 2
    assert decision.target is Target.HOLD and "over its 50 ms budget" in decision.reason
    assert runner.errors == 1 and "interrupted" in reported[0][1]


def test_a_strategy_that_swallows_exceptions_is_still_interrupted():
    def stubborn(ctx):
        while True:
            try:
                time.sleep(0.01)
            except Exception:  # noqa: BLE001 - the strategy under test swallows everything it can
                pass

    started = time.perf_counter()
    decision, _, _ = answer(stubborn, budget=50)
    assert time.perf_counter() - started < 2 and "budget" in decision.reason


def test_a_strategy_that_keeps_failing_keeps_holding_and_counting():
    Answer.reply = lambda ctx: {}["missing"]
    runner, reported = runner_for(Answer())
    window = window_of([100.0])
    for i in range(1, 6):
        window.append_bar(E0 + 60 * i, 100.0, 100, 100, 100)
        assert runner.decide(view(window)).target is Target.HOLD
    assert runner.errors == 5 and len(reported) == 5


def test_a_live_parameter_change_stays_on_the_same_strategy_object():
    runner = loading.build(BotConfig(strategy="rsi_reversion"))
    strategy = runner.user
    loading.change_parameters(runner, BotConfig(strategy="rsi_reversion", strategy_params={"period": "9"},
                                                strategy_budget_ms=40))
    assert runner.user is strategy and strategy.period == 9 and runner.params["period"] == 9
    assert runner.budget_ms == 40
    with pytest.raises(StrategyError, match="need oversold < exit_level < overbought"):
        loading.change_parameters(runner, BotConfig(strategy="rsi_reversion", strategy_params={"oversold": "49",
                                                                                               "exit_level": "45"}))
    assert strategy.period == 9 and strategy.oversold == 30.0  # a refused change changes nothing


def test_hold_answers_are_holds():
    assert answer(None)[0].reason == "no signal"
    assert answer(hold("calm"))[0].reason == "calm"


def test_a_symbol_the_strategy_does_not_trade_holds_without_asking_it():
    runner, reported = runner_for(loading.build(BotConfig(strategy="funding_carry")).user)
    decision = runner.decide(view(window_of([100.0, 101])))  # BTC-USD: spot
    assert decision.target is Target.HOLD and decision.reason == "not traded by funding_carry" and reported == []


def test_a_warmup_that_raises_or_is_not_a_number_of_bars_is_a_start_up_error():
    class Words(Strategy):
        def warmup(self):
            return "ten"

    class Boom(Strategy):
        def warmup(self):
            raise KeyError("period")

    with pytest.raises(StrategyError, match=r"strategy Words: warmup\(\) gave 'ten', not a number of bars"):
        StrategyRunner(Words(), 60, budget_ms=None, spec="words")
    with pytest.raises(StrategyError, match=r"strategy Boom: warmup\(\) raised KeyError: 'period'"):
        StrategyRunner(Boom(), 60, budget_ms=None, spec="boom")


def test_indicators_keep_a_bounded_history_and_stay_exact():
    class Long(Strategy):
        def on_bar(self, ctx: Context) -> Signal | None:
            ctx.state["sma"] = ctx.indicator(SMA, 5)
            return None

    runner, _ = runner_for(Long())
    window = MarkWindow(max_marks=10, max_bars=50, bar_seconds=60)
    closes = [100.0 + (i % 17) for i in range(3000)]
    for i, close in enumerate(closes):
        window.append_bar(E0 + 60 * i, close, close, close, close)
        runner.decide(view(window))
    sma = runner._symbols["BTC-USD"].ctx.state["sma"]
    assert len(sma) <= 2 * 256 + 1 and math.isclose(sma[-1], sum(closes[-5:]) / 5)


def test_a_strategy_that_trades_none_of_the_configured_symbols_does_not_start(monkeypatch):
    class OnlyEth(Strategy):
        symbols = ("ETH-USD",)

    monkeypatch.setitem(loading.BUILTINS, "only_eth", f"{__name__}:OnlyEthForTest")
    monkeypatch.setitem(globals(), "OnlyEthForTest", OnlyEth)
    with pytest.raises(StrategyError, match=r"strategy OnlyEth trades only ETH-USD: none of the configured symbols "
                                            r"\(BTC-USD\)"):
        loading.build(BotConfig(strategy="only_eth", symbols="BTC-USD"))
    runner = loading.build(BotConfig(strategy="only_eth", symbols="BTC-USD,ETH-USD"))
    assert runner.user.trades(BTC) is False


def test_a_symbol_filter_that_raises_leaves_the_symbol_alone_and_is_counted_once():
    class Picky(Strategy):
        def trades(self, product):
            raise LookupError("which one")

        def on_bar(self, ctx):
            return go_long("never")

    runner, reported = runner_for(Picky())
    window = window_of([100.0, 101])
    for _ in range(3):
        assert runner.decide(view(window)).reason == "not traded by Picky"
    assert runner.errors == 1 and reported == [("BTC-USD", "strategy Picky trades() raised LookupError: which one")]


def test_indicators_interrupted_mid_update_are_built_again_from_the_bars():
    class Slow(Strategy):
        def on_bar(self, ctx):
            sma = ctx.indicator(SMA, 2)
            if "first" not in ctx.state:
                ctx.state["first"] = sma
                time.sleep(5)  # interrupted here: for all the runner knows, sma is half updated
            return hold(f"{sma[-1]} {'new' if sma is not ctx.state['first'] else 'same'}")

    runner, _ = runner_for(Slow(), budget=50)
    window = window_of([100.0, 102])
    assert "budget" in runner.decide(view(window)).reason
    window.append_bar(E0 + 120, 104.0, 104, 104, 104)
    assert runner.decide(view(window)).reason == "103.0 new"  # a new indicator, fed the bars held
