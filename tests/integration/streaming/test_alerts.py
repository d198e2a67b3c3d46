"""Alert rules driven by the simulator server's faults: each alert fires once and
resolves; the webhook gets both; the stream's figures reach /metrics over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from perpsbot.bot import PerpsBot
from perpsbot.config import BotConfig
from perpsbot.exchange.coinbase.rest import RetryPolicy
from perpsbot.exchange.port import ExchangeError
from perpsbot.exchange.sim.keys import ApiKey
from perpsbot.exchange.sim.server import SimServer
from perpsbot.strategy.base import Decision, Target
from tests.characterization.test_telemetry import get, sample
from tests.integration.streaming.conftest import start_bot, wait_for

SYMBOLS = ("BIP-20DEC30-CDE", "ETH-USD")


async def cycle_until(bot: PerpsBot, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await bot.run_cycle()  # the alert rules are evaluated at the end of every cycle
        if predicate():
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def alerts(bot: PerpsBot, kind: str, rule: str) -> list:
    return [e for e in bot.registry.events.query(kind=kind) if e.data["rule"] == rule]


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[dict], dict]]:
    """A Slack-like webhook on 127.0.0.1: records what it gets; ``control['status']`` is its answer."""
    received: list[dict] = []
    control = {"status": 200}

    async def post(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=control["status"], text="ok")

    app = web.Application()
    app.router.add_post("/services/T000/B000/s3cr3t-token", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-token", received, control
    await runner.cleanup()


async def test_stale_marks_fire_p1_to_events_and_webhook_and_resolve_when_marks_return(
        server: SimServer, tmp_path: Path, key: ApiKey, hook):
    url, received, _ = hook
    bot = await start_bot(server, tmp_path, key, alert_mark_stale_seconds=0.5, mark_warn_seconds=0.2,
                          mark_staleness_seconds=0.4, alert_webhook_url=url)
    reg = bot.registry
    reg.exchange.rest.retry = RetryPolicy(attempts=1)
    try:
        await wait_for(lambda: all(reg.streaming.serving(s) for s in SYMBOLS))
        await bot.run_cycle()
        assert not reg.alerts.is_active("mark_stale")
        server.faults.set("ws_disconnect", 1.0)
        server.faults.set("server_error", 1.0)  # the REST fallback fails too: no marks at all
        await cycle_until(bot, lambda: reg.alerts.is_active("mark_stale"))
        (fired,) = alerts(bot, "alert", "mark_stale")
        assert fired.data["severity"] == "P1" and set(fired.data["symbols"]) == set(SYMBOLS)
        for _ in range(40):  # the stream flaps (each reconnect is dropped at its first message): catch it down
            status, text = await get(bot, "/health")
            health = json.loads(text)
            if len(health["reasons"]) > 1:
                break
            await asyncio.sleep(0.05)
        assert (status, health["status"]) == (503, "failing")
        assert health["reasons"][0].startswith("stale marks: ")
        assert health["reasons"][1] == "market stream down: marks polled over REST"
        server.faults.clear()
        await cycle_until(bot, lambda: not reg.alerts.is_active("mark_stale"))
        assert len(alerts(bot, "alert", "mark_stale")) == 1  # fired once for the whole outage
        assert len(alerts(bot, "alert_cleared", "mark_stale")) == 1
        texts = lambda: [r["text"] for r in received if "mark_stale" in r["text"]]  # noqa: E731
        await wait_for(lambda: len(texts()) >= 2)
        assert texts()[0].startswith("perpsbot P1 alert mark_stale: no mark update for over 0.5 s")
        assert texts()[1] == "perpsbot P1 resolved mark_stale: every symbol has a fresh mark"
    finally:
        server.faults.clear()
        await bot.shutdown()


async def test_reconnect_storm_fires_p2_and_resolves_once_the_window_is_calm(server: SimServer, tmp_path: Path,
                                                                            key: ApiKey):
    bot = await start_bot(server, tmp_path, key, alert_reconnects=2, alert_window_seconds=1.0)
    reg = bot.registry
    try:
        await wait_for(lambda: reg.streaming.connected)
        await bot.run_cycle()
        server.faults.set("ws_disconnect", 1.0)  # every message drops the connection
        await cycle_until(bot, lambda: reg.alerts.is_active("ws_reconnects"))
        (fired,) = alerts(bot, "alert", "ws_reconnects")
        assert fired.data["severity"] == "P2" and fired.data["reconnects"] > 2
        server.faults.disable("ws_disconnect")
        await cycle_until(bot, lambda: not reg.alerts.is_active("ws_reconnects"))
        assert len(alerts(bot, "alert", "ws_reconnects")) == 1
        assert len(alerts(bot, "alert_cleared", "ws_reconnects")) == 1
        status, text = await get(bot, "/metrics")
        assert status == 200 and sample(text, "perpsbot_ws_reconnects_total") > 2
    finally:
        server.faults.clear()
        await bot.shutdown()


async def test_failing_orders_fire_p2_and_successful_ones_resolve_it(server: SimServer, tmp_path: Path,
                                                                     key: ApiKey):
    bot = await start_bot(server, tmp_path, key, alert_order_failure_rate=0.5, alert_order_min_orders=2,
                          alert_window_seconds=120, position_fraction="0.01", late_acceptance_seconds=0.5,
                          order_timeout_seconds=1)
    reg = bot.registry
    reg.exchange.rest.retry = RetryPolicy(attempts=1)
    ex = reg.execution
    try:
        await wait_for(lambda: all(reg.streaming.serving(s) for s in SYMBOLS))
        await bot.run_cycle()
        server.faults.set("server_error", 1.0)  # orders and their lookups answered 500
        for symbol in SYMBOLS:
            with contextlib.suppress(ExchangeError):
                await ex.execute_decision(Decision(symbol, Target.LONG, "test", reg.market_data.mark(symbol)))
        assert ex.failed == 2
        await bot.run_cycle()
        (fired,) = alerts(bot, "alert", "order_failures")
        assert fired.data == {**fired.data, "severity": "P2", "failed": 2, "orders": 2}
        server.faults.clear()
        await asyncio.sleep(1.5)  # past the bound (timeout + late acceptance): unlisted now means never taken
        await ex.reconciler.reconcile()  # the unknown intents settle: never reached the exchange
        for symbol in SYMBOLS:
            result = await ex.execute_decision(Decision(symbol, Target.LONG, "test", reg.market_data.mark(symbol)))
            assert [r.outcome for r in result] == ["placed"]
        await bot.run_cycle()  # 2 of 4 failed: at the limit, not above it
        assert not reg.alerts.is_active("order_failures")
        assert len(alerts(bot, "alert_cleared", "order_failures")) == 1
        status, text = await get(bot, "/metrics")
        assert sample(text, "perpsbot_orders_failed_total", reason="unknown_fate") == 2
        assert sample(text, "perpsbot_order_latency_seconds_count") == 2
    finally:
        server.faults.clear()
        await bot.shutdown()


async def test_a_failing_webhook_is_recorded_and_never_stops_the_bot(server: SimServer, tmp_path: Path,
                                                                     key: ApiKey, hook):
    url, received, control = hook
    control["status"] = 500
    bot = await start_bot(server, tmp_path, key, alert_webhook_url=url)
    try:
        bot.registry.alerts.fire("demo", "P2", "first")
        await wait_for(lambda: bot.webhook.failed == 1)
        (failure,) = bot.registry.events.query(kind="alert_webhook_failed")
        assert failure.data["error"] == "HTTP 500"
        await bot.run_cycle()  # the bot carries on
        control["status"] = 200
        bot.registry.alerts.clear("demo", "fine")
        await wait_for(lambda: bot.webhook.sent == 1)
        assert [r["text"] for r in received] == ["perpsbot P2 alert demo: first", "perpsbot P2 resolved demo: fine"]
        await hook_gone(bot)
        every_event = " ".join(str(e.data) for e in bot.registry.events.query())
        assert "s3cr3t-token" not in every_event
    finally:
        await bot.shutdown()


async def hook_gone(bot: PerpsBot) -> None:
    """The webhook moved (a live config change) to where nobody listens: a connection
    error, recorded without the URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/services/s3cr3t-token"
    await bot.apply_config_change(BotConfig(**{**bot.config.model_dump(), "alert_webhook_url": closed}))
    bot.registry.alerts.fire("demo2", "P1", "second")
    await wait_for(lambda: len(bot.registry.events.query(kind="alert_webhook_failed")) == 2)
    assert bot.registry.events.query(kind="alert_webhook_failed")[-1].data["error"].startswith("Client")


async def test_stream_lag_heartbeat_and_mark_updates_reach_metrics(server: SimServer, tmp_path: Path, key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await wait_for(lambda: streaming.heartbeat_age() is not None, timeout=3)
        await bot.run_cycle()
        status, text = await get(bot, "/metrics")
        assert status == 200
        assert sample(text, "perpsbot_ws_connected") == 1
        count = sample(text, "perpsbot_ws_message_lag_seconds_count")
        assert 0 < count <= streaming.lag.total  # the stream goes on after the scrape
        assert sample(text, "perpsbot_ws_message_lag_seconds_bucket", le="+Inf") == count
        assert 0 < sample(text, "perpsbot_ws_message_lag_seconds_sum") < count * 0.25
        assert 0 <= sample(text, "perpsbot_ws_heartbeat_lag_seconds") < 1.5
        for symbol in SYMBOLS:
            assert sample(text, "perpsbot_mark_updates_total", symbol=symbol) >= 1
            assert sample(text, "perpsbot_mark_age_seconds", symbol=symbol) < 1.0
        status, text = await get(bot, "/health")
        assert status == 200 and '"status": "ok"' in text
    finally:
        await bot.shutdown()
