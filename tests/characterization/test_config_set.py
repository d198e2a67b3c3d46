"""Changes to a running bot: ``config set`` commands and SIGHUP's re-read, applied between
cycles through ``apply_config_change``, each whole or refused whole, each an event."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.config import BotConfig, ConfigError
from perpsbot.config.diff import CONFIG_SET
from perpsbot.domain import Product, ProductType, TimeInForce
from perpsbot.redact import REDACTED
from tests.fakes import FAKE_CAPABILITIES, FakeExchange, perp

SYMBOLS = ("BTC-USD", "ETH-USD")
WEBHOOK = "https://hooks.example.com/services/T000/B000/sekr1tsekr1t"


def spot(symbol: str) -> Product:
    return Product(symbol, symbol.split("-")[0], "USD", ProductType.SPOT, D("0.0001"), D("0.01"), D("0.0001"), D(1))


@pytest.fixture
def exchange(clock) -> FakeExchange:
    fake = FakeExchange(
        clock, [spot("BTC-USD"), spot("ETH-USD"), perp("BIP-20DEC30-CDE")],
        prices={"BTC-USD": D(100), "ETH-USD": D(50), "BIP-20DEC30-CDE": D(101)},
    )
    fake.capabilities = dataclasses.replace(FAKE_CAPABILITIES, times_in_force=frozenset({TimeInForce.GTC}))
    return fake


@pytest.fixture
def make_config(tmp_path: Path):
    def make(**overrides) -> BotConfig:
        values = dict(symbols=SYMBOLS, data_dir=tmp_path / "data", bar_seconds=1, short_window=2, long_window=4,
                      vol_window=5, vol_warn=10_000, vol_reduce_only=20_000, vol_kill=30_000)
        return BotConfig(**{**values, **overrides})

    return make


@pytest.fixture
async def bot(clock, exchange, make_config):
    bot = await PerpsBotBuilder(make_config()).with_clock(clock).with_exchange(exchange).build()
    await bot.start()
    await bot.run_cycle()
    yield bot
    await bot.shutdown()


def post(bot: PerpsBot, run: int | None = None, **values: str) -> int:
    events = bot.registry.events
    return events.post_command(bot.clock.now(), CONFIG_SET, values=values, run=run or events.run_id)


async def test_a_config_set_is_applied_whole_or_refused_whole(bot: PerpsBot):
    events = bot.registry.events
    applied = post(bot, max_position_notional="20000", symbols="BTC-USD,ETH-USD,BIP-20DEC30-CDE")
    refusals = {
        post(bot, max_position_notional="1000", seed="9"): "refused: seed needs a restart",
        post(bot, max_position_notional="1000", symbols="BTC-USD,XRP-USD"): "refused: unknown product XRP-USD",
        post(bot, max_position_notional="1000", short_window="9"):
            "refused: config error: short_window (9) must be smaller than long_window (4)",
        post(bot, max_position_notional="1000", order_type="limit", time_in_force="IOC"):
            "refused: order_type = limit, time_in_force = IOC: fake",
        post(bot, run=events.run_id + 1, max_position_notional="1000"): "refused: posted for run",
    }
    await bot.apply_requested_changes()

    assert events.command_result(applied) == (
        "ok: max_position_notional 50000 -> 20000; symbols BTC-USD,ETH-USD -> BTC-USD,ETH-USD,BIP-20DEC30-CDE"
    )
    for command_id, result in refusals.items():
        assert events.command_result(command_id).startswith(result)
    reg = bot.registry
    assert reg.config.max_position_notional == reg.risk.config.max_position_notional == D(20_000)
    assert reg.market_data.symbols == ("BTC-USD", "ETH-USD", "BIP-20DEC30-CDE")
    (changed,) = events.query(kind="config_changed")
    assert changed.data["source"] == "config set"
    assert changed.data["changes"] == {
        "max_position_notional": {"old": "50000", "new": "20000"},
        "symbols": {"old": ["BTC-USD", "ETH-USD"], "new": ["BTC-USD", "ETH-USD", "BIP-20DEC30-CDE"]},
    }
    assert [e.data["id"] for e in events.query(kind="command")] == [applied, *refusals]
    assert events.pending_commands() == []
    report = await bot.run_cycle()
    assert set(report.decisions) == {"BTC-USD", "ETH-USD", "BIP-20DEC30-CDE"}

    removed = post(bot, symbols="ETH-USD", long_window="6")  # and a strategy parameter
    await bot.apply_requested_changes()
    assert events.command_result(removed) == (
        "ok: long_window 4 -> 6; symbols BTC-USD,ETH-USD,BIP-20DEC30-CDE -> ETH-USD"
    )
    assert reg.strategy.strategy.required_bars == reg.market_data.spec.max_bars == 7
    assert set((await bot.run_cycle()).decisions) == {"ETH-USD"}


async def test_sighup_applies_the_reread_config_and_keeps_the_old_one_when_it_is_invalid(bot: PerpsBot, make_config):
    events = bot.registry.events

    def broken() -> BotConfig:
        raise ConfigError("config error: max_order_notional = 'lots' (file bot.toml): Input should be a valid decimal")

    bot.request_reload(broken)
    await bot.apply_requested_changes()
    (error,) = events.query(kind="error")
    assert error.data == {
        "stage": "config reload",
        "error": "refused: config error: max_order_notional = 'lots' (file bot.toml): Input should be a valid decimal",
    }
    (alert,) = events.query(kind="alert")
    assert alert.data["rule"] == "config_reload_failed" and "the config in force stays" in alert.data["message"]
    assert bot.config == make_config() and events.query(kind="config_changed") == []

    bot.request_reload(lambda: make_config(data_dir=Path("elsewhere"), max_order_notional=9000))
    await bot.apply_requested_changes()
    assert events.query(kind="error")[-1].data["error"] == "refused: data_dir needs a restart"
    assert bot.config.max_order_notional == D(25_000)  # nothing of a refused change

    bot.request_reload(lambda: make_config(max_order_notional=9000, alert_webhook_url=WEBHOOK))
    await bot.apply_requested_changes()
    (changed,) = events.query(kind="config_changed")
    assert changed.data["source"] == "SIGHUP"
    assert changed.data["changes"] == {
        "alert_webhook_url": {"old": None, "new": REDACTED},
        "max_order_notional": {"old": "25000", "new": "9000"},
    }
    assert bot.registry.execution.config.max_order_notional == D(9000)
    await bot.apply_requested_changes()  # a re-read is done once
    assert len(events.query(kind="config_changed")) == 1
    written = b"".join(p.read_bytes() for p in events.path.parent.glob("events.db*"))  # with the WAL
    assert b"sekr1t" not in written and b"alert_webhook_url" in written
