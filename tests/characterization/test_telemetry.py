"""Telemetry on the in-process bot: /metrics and /health over real HTTP on 127.0.0.1,
the alert book, the memory rule (injected RSS, manual clock) and the deploy files."""

from __future__ import annotations

import json
import re
import socket
from decimal import Decimal as D
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from perpsbot.bot import BotError, PerpsBot, PerpsBotBuilder
from perpsbot.domain import Side
from perpsbot.risk.manager import OrderIntent
from perpsbot.store.alerts import AlertBook
from perpsbot.telemetry.alerts import MB, AlertRules
from perpsbot.telemetry.health import evaluate
from tests.characterization.test_cycle import RISE, drive

ROOT = Path(__file__).resolve().parents[2]
BTC, ETH = "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"


async def get(bot: PerpsBot, path: str) -> tuple[int, str]:
    assert bot.http_port
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{bot.http_port}{path}") as resp:
        return resp.status, await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def exported_names(text: str) -> set[str]:
    """Every series name a scrape can carry, from the families' types."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


# ----- the server ---------------------------------------------------------------------------


async def test_the_server_binds_a_free_port_on_loopback_and_records_it(make_bot):
    bot = await make_bot(http_port=0)
    assert bot.http_port and bot.web is not None and bot.web.url == f"http://127.0.0.1:{bot.http_port}"
    (started,) = bot.registry.events.query(kind="bot_started")
    assert started.data["http_port"] == bot.http_port
    status, text = await get(bot, "/health")
    assert status == 503 and "no mark" in text  # no mark yet: it cannot trade
    await bot.run_cycle()
    status, _ = await get(bot, "/health")
    assert status == 200
    await bot.shutdown()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(bot, "/health")


async def test_http_port_off_starts_no_server(make_bot):
    bot = await make_bot(http_port="off")
    assert bot.web is None and bot.http_port is None
    assert bot.registry.events.query(kind="bot_started")[0].data["http_port"] is None


async def test_a_busy_port_stops_the_start_with_one_clear_line(make_bot):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BotError, match=rf"^http_port {port} on 127.0.0.1 is in use: choose another port"):
            await make_bot(http_port=port)


# ----- /metrics -----------------------------------------------------------------------------


async def test_metrics_show_marks_orders_latency_cycles_and_the_process(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC, ETH))
    await drive(bot, exchange, clock, BTC, RISE)  # goes long BTC once
    status, text = await get(bot, "/metrics")
    assert status == 200
    assert sample(text, "perpsbot_mark_updates_total", symbol=BTC) == len(RISE)
    assert sample(text, "perpsbot_mark_updates_total", symbol=ETH) == len(RISE)
    assert sample(text, "perpsbot_mark_age_seconds", symbol=BTC) == pytest.approx(1.0)  # the clock moved on 1 s
    assert sample(text, "perpsbot_orders_placed_total", symbol=BTC) == 1
    assert sample(text, "perpsbot_order_latency_seconds_count") == 1
    (placed,) = bot.registry.events.query(kind="order_placed")
    assert sample(text, "perpsbot_order_latency_seconds_sum") == pytest.approx(placed.data["latency_ms"] / 1000)
    assert sample(text, "perpsbot_cycle_seconds_count") == len(RISE)
    assert sample(text, "perpsbot_cycles") == len(RISE)
    assert sample(text, "perpsbot_process_resident_memory_bytes") > 10 * MB
    assert sample(text, "perpsbot_process_cpu_seconds_total") > 0
    assert sample(text, "perpsbot_ws_connected") == 0  # polled: no stream
    assert sample(text, "perpsbot_health_status") == 0


async def test_risk_rejections_exchange_failures_and_backups_are_counted_by_reason(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC,), kill_switch=True)
    await bot.registry.market_data.update_marks()
    reg = bot.registry
    intent = OrderIntent(BTC, Side.BUY, D("0.01"), D(100), D(0))
    assert not reg.risk.check(intent, D(100_000)).approved
    events = reg.events
    events.append(clock.now(), "order_rejected", BTC, code="INSUFFICIENT_FUNDS", detail="x")
    events.append(clock.now(), "order_unknown", BTC, error="TimeoutError", lookup="not listed")
    events.append(clock.now(), "backup_completed", None, duration_seconds=2.5)  # as the backup workflow records it
    _, text = await get(bot, "/metrics")
    assert sample(text, "perpsbot_risk_rejections_total", reason="kill_switch") == 1
    assert sample(text, "perpsbot_orders_failed_total", reason="INSUFFICIENT_FUNDS") == 1
    assert sample(text, "perpsbot_orders_failed_total", reason="unknown_fate") == 1
    assert sample(text, "perpsbot_backup_duration_seconds_count") == 1
    assert sample(text, "perpsbot_backup_duration_seconds_sum") == 2.5
    assert sample(text, "perpsbot_kill_switch") == 1


async def test_each_bot_has_its_own_metrics(make_bot, exchange, clock, tmp_path):
    first = await make_bot(symbols=(BTC,))
    second = await make_bot(symbols=(BTC,), data_dir=tmp_path / "second")  # one bot per store
    await first.run_cycle()
    _, one = await get(first, "/metrics")
    _, two = await get(second, "/metrics")
    assert sample(one, "perpsbot_cycles") == 1 and sample(two, "perpsbot_cycles") == 0


# ----- /health ------------------------------------------------------------------------------


async def test_health_goes_ok_degraded_failing_with_reasons(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC, ETH), mark_staleness_seconds=5)
    await bot.run_cycle()
    assert await health(bot) == (200, {"status": "ok", "reasons": []})

    bot.registry.risk.enter_reduce_only("daily_loss", "test")
    status, body = await health(bot)
    assert (status, body["status"]) == (200, "degraded") and body["reasons"] == ["reduce-only: daily_loss"]
    _, text = await get(bot, "/metrics")
    assert sample(text, "perpsbot_health_status") == 1 and sample(text, "perpsbot_reduce_only") == 1
    bot.registry.risk.leave_reduce_only("daily_loss")

    bot.registry.risk.enter_symbol_reduce_only(ETH, "reconciliation", "test")
    status, body = await health(bot)
    assert (status, body["status"]) == (200, "degraded")
    assert body["reasons"] == [f"reconciliation mismatch: {ETH} reduce-only until our records match the exchange's"]
    _, text = await get(bot, "/metrics")
    assert sample(text, "perpsbot_symbol_reduce_only", symbol=ETH) == 1
    assert sample(text, "perpsbot_symbol_reduce_only", symbol=BTC) == 0
    assert sample(text, "perpsbot_reduce_only") == 0  # the mode itself: only one symbol is held back
    bot.registry.risk.leave_symbol_reduce_only(ETH, "reconciliation")
    bot.registry.risk.enter_symbol_reduce_only(BTC, "late_fill", "test")
    status, body = await health(bot)
    assert body["reasons"] == [f"late fill of an order we had closed: {BTC} reduce-only until flat"]
    bot.registry.risk.leave_symbol_reduce_only(BTC, "late_fill")

    exchange.failing.add(ETH)  # one feed down: ETH goes stale, BTC stays fresh
    for _ in range(6):
        clock.advance(1)
        await bot.run_cycle()
    status, body = await health(bot)
    assert (status, body["status"]) == (200, "degraded")
    assert body["reasons"] == [f"stale marks: {ETH} (6.0 s)"]

    exchange.failing.add(BTC)  # every feed down: nothing can be traded
    clock.advance(6)
    await bot.run_cycle()
    status, body = await health(bot)
    assert (status, body["status"]) == (503, "failing") and body["reasons"][0].startswith("stale marks: ")

    exchange.failing.clear()
    await bot.run_cycle()
    bot.registry.risk.enter_kill("config", "kill_switch is set")
    assert await health(bot) == (503, {"status": "failing", "reasons": ["kill switch: config"]})
    _, text = await get(bot, "/metrics")
    assert sample(text, "perpsbot_health_status") == 2 and sample(text, "perpsbot_kill_switch") == 1


async def test_health_is_failing_until_the_bot_has_started(make_config, exchange, clock):
    bot = await PerpsBotBuilder(make_config()).with_clock(clock).with_exchange(exchange).build()
    try:
        verdict = evaluate(bot)
        assert verdict["status"] == "failing" and verdict["reasons"][0] == "not running: starting or stopped"
        await bot.start()
        await bot.run_cycle()
        assert evaluate(bot)["status"] == "ok"
    finally:
        await bot.shutdown()


async def health(bot: PerpsBot) -> tuple[int, dict]:
    status, text = await get(bot, "/health")
    return status, json.loads(text)


# ----- alerts -------------------------------------------------------------------------------


async def test_an_alert_fires_once_resolves_once_and_survives_a_restart(make_bot, clock, caplog):
    bot = await make_bot(symbols=(BTC,))
    book = bot.registry.alerts
    caplog.set_level("INFO", logger="perpsbot.store.alerts")
    assert book.fire("demo", "P2", "something is off", detail=1)
    assert not book.fire("demo", "P2", "something is still off")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "alert demo [P2]: something is off")
    ]
    events = bot.registry.events
    (alert,) = events.query(kind="alert")
    assert alert.data == {"rule": "demo", "severity": "P2", "message": "something is off", "detail": 1}
    again = AlertBook(events, clock)  # a new process reads the active alerts back
    assert again.is_active("demo") and not again.fire("demo", "P2", "still")
    assert again.clear("demo", "fine now") and not again.clear("demo")
    (cleared,) = events.query(kind="alert_cleared")
    assert cleared.data["rule"] == "demo" and cleared.data["severity"] == "P2"
    assert caplog.records[-1].getMessage() == "alert demo [P2] cleared fine now"
    assert not AlertBook(events, clock).is_active("demo")
    with pytest.raises(ValueError, match="unknown severity"):
        book.notify("demo", "P9", "x")


async def test_no_mark_update_beyond_the_limit_fires_p1_and_fresh_marks_resolve_it(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC, ETH), alert_mark_stale_seconds=3, mark_staleness_seconds=10)
    await bot.run_cycle()
    exchange.failing.add(ETH)
    for _ in range(5):
        clock.advance(1)
        await bot.run_cycle()
    events = bot.registry.events
    (alert,) = events.query(kind="alert")
    assert alert.data["rule"] == "mark_stale" and alert.data["severity"] == "P1"
    assert alert.data["symbols"] == [ETH] and ETH in alert.data["message"]
    _, text = await get(bot, "/metrics")
    assert sample(text, "perpsbot_alert_active", rule="mark_stale", severity="P1") == 1
    assert sample(text, "perpsbot_alerts_total", rule="mark_stale", severity="P1") == 1
    exchange.failing.clear()
    await bot.run_cycle()
    await bot.run_cycle()
    (cleared,) = events.query(kind="alert_cleared")
    assert cleared.data["rule"] == "mark_stale"
    assert len(events.query(kind="alert")) == 1


async def test_a_symbol_added_live_is_not_stale_before_it_had_its_chance(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC,), alert_mark_stale_seconds=3)
    for _ in range(5):
        clock.advance(1)
        await bot.run_cycle()
    exchange.failing.add(ETH)
    await bot.apply_config_change(bot.config.model_copy(update={"symbols": (BTC, ETH)}))
    await bot.run_cycle()
    assert not bot.registry.alerts.is_active("mark_stale")  # no mark yet, but only just added
    for _ in range(4):
        clock.advance(1)
        await bot.run_cycle()
    assert bot.registry.alerts.is_active("mark_stale")
    assert bot.registry.events.query(kind="alert")[-1].data["symbols"] == [ETH]


async def test_sustained_memory_growth_fires_and_a_plateau_resolves_it(make_bot, clock):
    bot = await make_bot(symbols=(BTC,), alert_memory_growth_mb_per_hour=20, alert_memory_window_seconds=3600)
    rss = [200 * MB]
    rules = AlertRules(bot, rss=lambda: rss[0])
    book = bot.registry.alerts

    def run_for(seconds: int, mb_per_hour: float) -> None:
        for _ in range(seconds // 30):
            clock.advance(30)
            rss[0] += int(mb_per_hour * MB * 30 / 3600)
            rules.evaluate()

    run_for(1800, 40)  # fast growth, but not watched for a whole hour yet
    assert not book.is_active("memory_growth")
    run_for(1800, 40)
    assert book.is_active("memory_growth")
    (alert,) = [e for e in bot.registry.events.query(kind="alert") if e.data["rule"] == "memory_growth"]
    assert alert.data["severity"] == "P2" and alert.data["mb_per_hour"] == pytest.approx(40, rel=0.05)
    run_for(3600, 0)
    assert not book.is_active("memory_growth")
    cleared = [e for e in bot.registry.events.query(kind="alert_cleared") if e.data["rule"] == "memory_growth"]
    assert len(cleared) == 1


async def test_a_one_off_memory_jump_is_not_sustained_growth(make_bot, clock):
    bot = await make_bot(symbols=(BTC,), alert_memory_window_seconds=3600)
    rss = [200 * MB]
    rules = AlertRules(bot, rss=lambda: rss[0])
    for step in range(240):
        clock.advance(30)
        if step == 150:
            rss[0] += 60 * MB  # a cache filled once: 60 MB within the hour, then flat
        rules.evaluate()
    assert not bot.registry.alerts.is_active("memory_growth")


# ----- deploy files -------------------------------------------------------------------------


async def test_every_metric_in_the_prometheus_rules_and_grafana_dashboard_is_exported(make_bot):
    bot = await make_bot(symbols=(BTC,))
    _, text = await get(bot, "/metrics")
    exported = exported_names(text)
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "perpsbot.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for source, text_ in (("alerts.yml", rules), ("perpsbot.json", "\n".join(exprs))):
        used = set(re.findall(r"\bperpsbot_[a-z0-9_]+", text_))
        assert used, source
        assert used <= exported, f"{source} uses {sorted(used - exported)}, not exported"
    for rule in ("PerpsbotMarkStale", "PerpsbotWsReconnects", "PerpsbotMemoryGrowth", "PerpsbotOrderFailureRate"):
        assert f"alert: {rule}" in rules


async def test_a_broken_alert_rule_is_logged_and_the_cycle_goes_on(make_bot, caplog):
    bot = await make_bot(symbols=(BTC,))

    def broken() -> int:
        raise RuntimeError("no /proc here")

    bot.alert_rules.rss = broken
    report = await bot.run_cycle()
    assert report.marks.updated == (BTC,) and bot.cycles == 1
    assert any(r.getMessage() == "alert rules failed" for r in caplog.records)


async def test_a_reconnect_alert_left_active_by_a_streaming_run_resolves_without_a_stream(make_bot, clock):
    bot = await make_bot(symbols=(BTC,))
    assert bot.registry.streaming is None
    book = bot.registry.alerts
    book.fire("ws_reconnects", "P2", "7 market stream reconnects")  # as an earlier, streaming run left it
    bot.alert_rules.evaluate()
    assert not book.is_active("ws_reconnects")
    assert bot.registry.events.query(kind="alert_cleared")[-1].data["rule"] == "ws_reconnects"


async def test_a_symbol_removed_and_added_again_gets_its_chance_again(make_bot, exchange, clock):
    bot = await make_bot(symbols=(BTC,), alert_mark_stale_seconds=3)
    exchange.failing.add(ETH)
    await bot.apply_config_change(bot.config.model_copy(update={"symbols": (BTC, ETH)}))
    await bot.run_cycle()  # ETH watched from now, never gets a mark
    await bot.apply_config_change(bot.config.model_copy(update={"symbols": (BTC,)}))
    for _ in range(10):
        clock.advance(1)
        await bot.run_cycle()
    assert not bot.registry.alerts.is_active("mark_stale")
    await bot.apply_config_change(bot.config.model_copy(update={"symbols": (BTC, ETH)}))
    await bot.run_cycle()
    assert not bot.registry.alerts.is_active("mark_stale")  # added again just now: not stale yet


async def test_a_memory_growth_alert_of_an_earlier_process_resolves_when_this_one_starts_watching(make_bot, clock):
    bot = await make_bot(symbols=(BTC,), alert_memory_window_seconds=3600)
    book = bot.registry.alerts
    book.fire("memory_growth", "P2", "resident memory grew 40 MB/h")  # as the process before a restart left it
    rules = AlertRules(bot, rss=lambda: 100 * MB)  # this process: its own memory, watched from now
    rules.evaluate()
    assert not book.is_active("memory_growth")
    clock.advance(60)
    rules.evaluate()
    assert [e.data["rule"] for e in bot.registry.events.query(kind="alert_cleared")] == ["memory_growth"]
