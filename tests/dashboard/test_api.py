"""The dashboard's routes over real HTTP on 127.0.0.1: the token, the cookie, cross-origin
refusals, and what /api/state reports about a bot that has traded."""

from __future__ import annotations

import dataclasses
import re
import threading
from decimal import Decimal
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.dashboard import add_dashboard
from perpsbot.dashboard import state as state_module
from perpsbot.dashboard.state import dashboard_state, freshness, money, price, thin
from perpsbot.dashboard.web import cookie_name
from perpsbot.domain import Sweep, VenueMargin
from perpsbot.domain.clock import ManualClock
from tests.conftest import T0
from tests.dashboard.conftest import BTC, ETH, TOKEN, Served

D = Decimal
CENTS = re.compile(r"^-?\d+\.\d\d$")
BEARER = {"Authorization": f"Bearer {TOKEN}"}
COOKIE = cookie_name(TOKEN)


async def get(url: str, headers: dict[str, str] | None = None, *, redirects: bool = True):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}, allow_redirects=redirects) as response:
            return response.status, dict(response.headers), await response.text(), response.headers.getall(
                "Set-Cookie", []
            )


async def state(served: Served, query: str = "") -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/api/state{query}", headers=BEARER) as response:
            assert response.status == 200, await response.text()
            return await response.json()


WRONG = [
    {},
    {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Cookie": f"{COOKIE}=forged"},
    {"Cookie": f"{COOKIE}={TOKEN}"},  # the token itself is not the session value
]


async def test_a_wrong_or_missing_token_gets_401_and_no_data(served: Served) -> None:
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/app.css", "/api/state"):
        for headers in WRONG:
            status, got, body, cookies = await get(served.url + path, headers)
            assert status == 401, (path, headers)
            assert got["WWW-Authenticate"].startswith("Bearer")
            assert BTC not in body and "equity" not in body and "<html" not in body
            assert cookies == []


async def test_the_api_takes_no_token_in_the_url(served: Served) -> None:
    status, _, body, _ = await get(f"{served.url}/api/state?token={TOKEN}")
    assert status == 401 and BTC not in body


async def test_the_page_token_sets_a_strict_httponly_cookie_and_leaves_the_url(served: Served) -> None:
    status, headers, _, cookies = await get(f"{served.url}/dashboard?token={TOKEN}", redirects=False)
    assert status == 303 and headers["Location"] == "/dashboard"
    jar = SimpleCookie()
    jar.load(cookies[0])
    morsel = jar[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert TOKEN not in morsel.value
    assert COOKIE.startswith("perpsbot_dashboard_") and cookie_name("another-token-0123456789") != COOKIE
    session = {"Cookie": f"{COOKIE}={morsel.value}"}
    status, headers, body, _ = await get(f"{served.url}/dashboard", session)
    assert status == 200 and "<title>perpsbot dashboard</title>" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    status, _, body, _ = await get(f"{served.url}/api/state", session)
    assert status == 200 and BTC in body
    # a wrong page token: 401, and no cookie
    status, _, body, cookies = await get(f"{served.url}/dashboard?token=not-{TOKEN}", redirects=False)
    assert status == 401 and cookies == [] and "<html" not in body


async def test_cross_origin_requests_are_refused_even_with_the_token(served: Served) -> None:
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Host": "evil.example"},  # DNS rebinding: a foreign name resolving to 127.0.0.1
        {"Host": "127.0.0.1.evil.example:8080"},
        {"Host": "127.0.0.1:80@evil.example"},
        {"Host": "[::2]:8080"},
    ):
        status, _, body, _ = await get(f"{served.url}/api/state", {**BEARER, **headers})
        assert status == 403 and BTC not in body, headers


async def test_same_origin_requests_pass(served: Served) -> None:
    host = served.url.removeprefix("http://")
    for headers in ({"Origin": served.url, "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                    {"Host": "localhost:1234"}, {"Host": "[::1]:1234"}, {"Host": "LOCALHOST"}):
        status, _, body, _ = await get(f"{served.url}/api/state", {**BEARER, **headers})
        assert status == 200, (headers, body)
    assert host.startswith("127.0.0.1:")


async def test_the_state_shows_positions_orders_pnl_marks_and_risk(served: Served) -> None:
    s = await state(served)
    reg = served.bot.registry
    btc_product = reg.products[BTC]
    [position] = s["positions"]
    assert position["symbol"] == BTC and position["side"] == "long" and position["size"] == "25"
    assert position["leverage"] == "2" and position["expires"] == "2030-12-20"  # the future's listed expiry
    mark = reg.market_data.mark(BTC)
    assert position["mark"] == price(mark, btc_product)
    entry = reg.execution.account.positions[BTC].entry_price
    assert position["unrealized"] == money(25 * D("0.01") * (mark - entry))  # contracts x 0.01 BTC
    [order] = s["orders"]
    assert order["client_order_id"] == served.limit_order_id
    assert (order["symbol"], order["side"], order["type"], order["size"]) == (ETH, "BUY", "LIMIT", "15")
    assert order["status"] == "OPEN" and order["age_seconds"] == 40.0
    assert D(order["limit_price"]) < reg.market_data.mark(ETH)
    pnl = reg.execution.pnl()
    for key in ("realized", "unrealized", "fees", "funding", "net"):
        assert s["pnl"][key] == money(getattr(pnl, key))
        assert CENTS.match(s["pnl"][key])
    assert D(s["pnl"]["fees"]) > 0  # the market buy paid a taker fee
    assert s["account"]["equity"] == money(reg.execution.account.equity)
    assert s["account"]["start_equity"] == "100000.00"
    assert [m["symbol"] for m in s["marks"]] == [BTC, ETH]
    assert all(m["freshness"] == "fresh" and m["age_seconds"] == 0.0 for m in s["marks"])
    assert s["risk"] == {"mode": "normal", "reduce_only_reasons": [], "symbol_reduce_only": {}, "kill_reasons": []}
    assert s["health"] == {"status": "ok", "reasons": []}
    assert s["bot"]["cycles"] == 5 and s["bot"]["exchange"] == "sim"


async def test_alerts_active_and_recent(served: Served) -> None:
    alerts = (await state(served))["alerts"]
    active = {a["rule"]: a for a in alerts["active"]}
    # reconnects fired then cleared; a one-off alert has nothing to resolve; the stale mark
    # and the reconciliation mismatch are still on
    assert set(active) == {"mark_stale", "reconciliation_mismatch"}
    assert active["mark_stale"]["severity"] == "P1" and "75 s" in active["mark_stale"]["message"]
    assert "exchange 30 vs ours 25" in active["reconciliation_mismatch"]["details"]
    assert [(a["kind"], a["rule"]) for a in alerts["recent"]] == [
        ("alert", "reconciliation_mismatch"), ("alert", "fill_out_of_state"), ("alert_cleared", "reconnects"),
        ("alert", "reconnects"), ("alert", "mark_stale"),
    ]
    served.bot.registry.alerts.clear("mark_stale")
    assert [a["rule"] for a in (await state(served))["alerts"]["active"]] == ["reconciliation_mismatch"]


async def test_an_alert_left_active_by_an_earlier_run_shows_as_active(served: Served) -> None:
    served.bot.registry.alerts.active["ws_reconnects"] = {
        "severity": "P2", "message": "7 reconnects in 5 min", "since": "2026-03-01T09:00:00+00:00",
    }  # as a restart restores it from the state table: no alert event in this run
    active = {a["rule"]: a for a in (await state(served))["alerts"]["active"]}
    assert active["ws_reconnects"]["message"] == "7 reconnects in 5 min" and active["ws_reconnects"]["id"] is None


async def test_the_equity_history_comes_from_snapshots_then_only_new_ones(served: Served) -> None:
    first = await state(served)
    history = first["equity_history"]
    snapshots = served.bot.registry.events.query(kind="snapshot", run_id=served.bot.registry.events.run_id)
    assert len(history["points"]) == len(snapshots) >= 4
    assert history["points"][-1] == [snapshots[-1].ts, money(D(snapshots[-1].data["equity"]))]
    assert all(CENTS.match(p[1]) for p in history["points"])
    again = await state(served, f"?equity_after={history['last_id']}")
    assert again["equity_history"] == {"points": [], "last_id": history["last_id"]}
    served.clock.advance(1)  # not far enough to wake the bot's own 10 s snapshot loop
    served.bot.record_snapshot()
    newer = (await state(served, f"?equity_after={history['last_id']}"))["equity_history"]
    assert len(newer["points"]) == 1 and newer["last_id"] > history["last_id"]
    for bad in ("-1", "%C2%B2", "%D9%A3"):  # a sign; a superscript two and an Arabic three are digits to str.isdigit
        status, _, body, _ = await get(f"{served.url}/api/state?equity_after={bad}", BEARER)
        assert status == 400 and "whole number" in body, bad


async def test_marks_age_into_stale_and_risk_and_health_show_through(served: Served) -> None:
    served.clock.advance(7)  # past mark_warn_seconds (3), not past mark_staleness_seconds (10)
    assert {m["freshness"] for m in (await state(served))["marks"]} == {"aging"}
    served.clock.advance(5)
    s = await state(served)
    assert {m["freshness"] for m in s["marks"]} == {"stale"} and s["marks"][0]["age_seconds"] == 12.0
    served.bot.registry.risk.enter_kill("test", "by hand")
    served.health = {"status": "failing", "reasons": ["stale marks: BIP-20DEC30-CDE"]}
    s = await state(served)
    assert s["risk"]["mode"] == "killed" and s["risk"]["kill_reasons"] == ["test"]
    assert s["health"] == served.health


async def test_a_broken_health_check_reads_as_failing(served: Served) -> None:
    served.health = {"status": "fine"}
    s = await state(served)
    assert s["health"]["status"] == "failing" and "'fine'" in s["health"]["reasons"][0]
    served.health = None  # type: ignore[assignment]
    s = await state(served)
    assert s["health"]["status"] == "failing" and "health check error" in s["health"]["reasons"][0]


async def test_the_page_loads_nothing_from_elsewhere(served: Served) -> None:
    session = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/app.css"):
        status, _, body, _ = await get(served.url + path, session)
        assert status == 200
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+", body)) - {"http://www.w3.org"}  # the SVG namespace
        assert urls == set(), (path, urls)
        assert "innerHTML" not in body


def test_add_dashboard_refuses_a_short_token() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        add_dashboard(web.Application(), None, "short", dict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "shown"),
    [("1.005", "1.00"), ("1.015", "1.02"), ("-0.004", "0.00"), ("-12.345", "-12.34"), ("100000", "100000.00"),
     ("123456789012.999", "123456789013.00"), ("0", "0.00")],
)
def test_money_is_a_string_to_the_cent(amount: str, shown: str) -> None:
    assert money(D(amount)) == shown


async def test_a_long_history_is_thinned_keeping_both_ends(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = served.bot.registry.events.field_series("snapshot", "equity", run_id=served.bot.registry.events.run_id)
    assert len(snapshots) > 3
    monkeypatch.setattr(state_module, "EQUITY_POINTS", 3)
    history = (await state(served))["equity_history"]
    assert [p[0] for p in history["points"]] == [
        snapshots[0][1],
        snapshots[round((len(snapshots) - 1) / 2)][1],
        snapshots[-1][1],
    ]
    assert history["last_id"] == snapshots[-1][0]


def test_thin() -> None:
    assert thin(list(range(10)), 20) == list(range(10))
    assert thin(list(range(10)), 4) == [0, 3, 6, 9]
    assert thin(list(range(1001)), 3) == [0, 500, 1000]


def test_freshness_levels() -> None:
    assert [freshness(a, 3, 10) for a in (None, 0.0, 3.0, 3.1, 10.0, 10.1)] == [
        "none", "fresh", "fresh", "aging", "aging", "stale",
    ]


async def test_a_bot_not_started_yet_shows_empty_figures(tmp_path: Path) -> None:
    bot = await PerpsBotBuilder(BotConfig(data_dir=tmp_path, symbols=(BTC,))).with_clock(ManualClock(T0)).build()
    try:
        s = dashboard_state(bot, lambda: {"status": "degraded", "reasons": ["starting"]})
    finally:
        await bot.shutdown()
    assert s["positions"] == [] and s["orders"] == [] and s["alerts"] == {"active": [], "recent": []}
    assert s["pnl"]["net"] == "0.00" and s["account"]["start_equity"] is None
    assert s["marks"] == [{"symbol": BTC, "mark": None, "age_seconds": None, "freshness": "none"}]
    assert s["equity_history"] == {"points": [], "last_id": None}


async def test_the_equity_history_is_read_off_the_event_loop(served: Served, monkeypatch) -> None:
    """A week of snapshots takes tens of milliseconds to read: never on the loop the
    bot's orders run on."""
    readers: list[int] = []
    real = state_module.read_field_series

    def spy(*args, **kwargs):
        readers.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(state_module, "read_field_series", spy)
    monkeypatch.setattr(
        served.bot.registry.events, "field_series", lambda *a, **k: pytest.fail("equity read on the event loop")
    )
    history = (await state(served))["equity_history"]
    snapshots = served.bot.registry.events.query(kind="snapshot", run_id=served.bot.registry.events.run_id)
    assert readers and threading.get_ident() not in readers
    assert len(history["points"]) == len(snapshots) >= 4 and history["last_id"] == snapshots[-1].id


async def test_the_account_shows_the_venues_margin_and_its_pending_sweeps(served: Served) -> None:
    own = (await state(served))["account"]["margin"]  # the in-process simulator's, as its server states it
    assert own["window"] in ("intraday", "overnight") and own["sweeps"] == [] and CENTS.match(own["buying_power"])
    execution = served.bot.registry.execution
    sweep = Sweep("sw-1", "PENDING", D("250"), T0)
    margin = VenueMargin("overnight", T0, D(10_000), D(5500), D(4500), D(2250), D(2250), D("7750.5"), D("77.5"),
                         sweeps=(sweep,))
    execution.account = dataclasses.replace(execution.account, margin=margin)
    shown = (await state(served))["account"]["margin"]
    assert shown == {"window": "overnight", "window_ends": T0.isoformat(), "buying_power": "5500.00",
                     "liquidation_buffer": "7750.50", "liquidation_buffer_pct": "77.5",
                     "sweeps": [{"id": "sw-1", "status": "PENDING", "amount": "250.00",
                                 "scheduled_at": T0.isoformat()}]}
