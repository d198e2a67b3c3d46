from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal as D

import pytest

from perpsbot.bot import BotError, PerpsBotBuilder
from perpsbot.config.diff import ConfigChangeRejected
from perpsbot.domain.clock import WallClock
from perpsbot.strategy.base import Decision, Target


async def test_apply_config_change_adds_a_symbol_everywhere_and_it_gets_marks_next_cycle(make_bot, make_config):
    bot = await make_bot()
    change = await bot.apply_config_change(make_config(symbols=("BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "SOL-USD")))
    assert change.added_symbols == ("SOL-USD",)
    reg = bot.registry
    assert "SOL-USD" in reg.market_data.windows
    assert reg.config.symbols[-1] == "SOL-USD"
    report = await bot.run_cycle()
    assert "SOL-USD" in report.marks.updated
    assert reg.market_data.mark("SOL-USD") == D(10)
    assert "SOL-USD" in report.decisions
    assert reg.events.query(kind="config_changed")[0].data["added"] == ["SOL-USD"]


async def test_apply_config_change_removes_a_symbol_from_every_service(make_bot, make_config, exchange):
    bot = await make_bot()
    await bot.run_cycle()
    reg = bot.registry
    assert "ETP-20DEC30-CDE" in reg.strategy.strategy._symbols  # the strategy's per-symbol bars and state
    await bot.apply_config_change(make_config(symbols=("BIP-20DEC30-CDE",)))
    assert "ETP-20DEC30-CDE" not in reg.market_data.windows
    assert "ETP-20DEC30-CDE" not in reg.market_data.last_update
    assert "ETP-20DEC30-CDE" not in reg.strategy.last_decision
    assert "ETP-20DEC30-CDE" not in reg.strategy.strategy._symbols
    exchange.quote_calls.clear()
    report = await bot.run_cycle()
    assert exchange.quote_calls == ["BIP-20DEC30-CDE"]
    assert set(report.decisions) == {"BIP-20DEC30-CDE"}


async def test_apply_config_change_updates_risk_and_execution_settings(make_bot, make_config):
    bot = await make_bot()
    await bot.apply_config_change(make_config(reduce_only=True, dry_run=True, long_window=6))
    reg = bot.registry
    assert reg.risk.reduce_only_reasons == ["config"]
    assert reg.execution.config.dry_run is True
    assert reg.strategy.strategy.required_bars == 7
    assert reg.market_data.spec.max_bars == 7  # long_window + 1 now exceeds vol_window + 1
    await bot.apply_config_change(make_config(reduce_only=False, long_window=6))
    assert not reg.risk.reduce_only


async def test_apply_config_change_refuses_what_needs_a_restart_and_unknown_symbols(make_bot, make_config):
    bot = await make_bot()
    with pytest.raises(ConfigChangeRejected, match="seed"):
        await bot.apply_config_change(make_config(seed=123))
    with pytest.raises(BotError, match="unknown product"):
        await bot.apply_config_change(make_config(symbols=("BIP-20DEC30-CDE", "XRP-USD")))
    assert bot.registry.market_data.symbols == ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE")


async def test_shutdown_cancels_background_tasks_and_persists_the_run(make_bot, exchange):
    bot = await make_bot()
    tasks = bot.background_tasks
    assert tasks and all(not t.done() for t in tasks)
    await bot.run_cycle()
    path = bot.registry.events.path
    summary = await bot.shutdown()
    assert all(t.cancelled() or t.done() for t in tasks)
    assert bot.background_tasks == frozenset()
    assert exchange.closed
    assert summary["cycles"] == 1
    conn = sqlite3.connect(path)
    kinds = [row[0] for row in conn.execute("SELECT kind FROM events ORDER BY id")]
    ended = conn.execute("SELECT ended_at FROM runs").fetchone()[0]
    conn.close()
    assert kinds[0] == "bot_started" and kinds[-1] == "bot_stopped"
    assert ended is not None


async def test_stop_ends_run_promptly(exchange, make_config):
    exchange.clock = WallClock()
    bot = await PerpsBotBuilder(make_config(interval=30.0)).with_clock(exchange.clock).with_exchange(exchange).build()
    runner = asyncio.create_task(bot.run())
    await asyncio.sleep(0.2)
    assert bot.cycles == 1  # now sleeping out a 30 s interval
    bot.stop()
    await asyncio.wait_for(runner, timeout=1.0)
    await bot.shutdown()


async def test_run_honours_duration(exchange, make_config):
    exchange.clock = WallClock()
    bot = await PerpsBotBuilder(make_config(interval=0.01)).with_clock(exchange.clock).with_exchange(exchange).build()
    await asyncio.wait_for(bot.run(duration=0.2), timeout=5)
    assert bot.cycles >= 5
    await bot.shutdown()


async def test_reduce_only_decisions_only_close(make_bot, exchange, clock, make_config):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await bot.registry.market_data.update_marks()
    opened = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "open", D(100)))
    assert [r.outcome for r in opened] == ["placed"]
    await bot.apply_config_change(make_config(symbols=("BIP-20DEC30-CDE",), reduce_only=True))
    results = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.SHORT, "reverse", D(100)))
    # the closing half goes through, the opening half is refused
    assert [r.outcome for r in results] == ["placed", "rejected_by_risk"]
    assert bot.registry.execution.position_size("BIP-20DEC30-CDE") == 0


async def test_summary_reports_order_latency_percentiles(make_bot):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    bot.registry.execution.latencies_ms.extend([float(i) for i in range(1, 101)])
    summary = bot.summary()
    assert summary["order_latency_p50_ms"] == 50.0
    assert summary["order_latency_p99_ms"] == 99.0
    # both figures are reported: equity moved (exchange's view) and PnL from our fills
    assert summary["equity_change"] == 0
    assert summary["pnl"]["net"] == 0


async def test_shutdown_records_the_run_metrics_in_an_event_and_the_summary(make_bot, clock):
    import json

    from perpsbot.review.runmetrics import METRIC_FIELDS

    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    for _ in range(4):
        clock.advance(1)
        await bot.run_cycle()
    bot.registry.execution.latencies_ms.extend([3.0, 9.0])
    bot.registry.execution.placed = 2
    path = bot.registry.events.path
    summary = await bot.shutdown()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT data FROM events WHERE kind = 'run_metrics'").fetchall()
    stored = json.loads(conn.execute("SELECT summary FROM runs").fetchone()[0])
    conn.close()
    assert len(rows) == 1
    event = json.loads(rows[0][0])
    assert set(event) == set(METRIC_FIELDS)
    assert {k: stored[k] for k in METRIC_FIELDS} == event == {k: summary[k] for k in METRIC_FIELDS}
    assert event["order_latency_p99_ms"] == 9.0
    assert event["order_failure_rate_pct"] == 0.0
    assert event["mark_update_frequency_hz"] == pytest.approx(1.0, rel=0.3)  # a poll a cycle, a cycle a second
    assert event["memory_rss_avg_mb"] > 0  # the shutdown sample at least
    # no stream behind the fake exchange and no backup: no data, not zero
    assert event["stream_heartbeat_lag_p95_ms"] is None
    assert event["ws_message_lag_p99_ms"] is None
    assert event["backup_duration_avg_s"] is None
