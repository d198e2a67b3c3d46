"""Acceptance: the dashboard in headless Chromium (Debian's, driven by Playwright) loads,
shows the bot's data, follows it live, and turns a wrong token away. The screenshot is
saved to build/test-output/dashboard.png."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from perpsbot.dashboard.state import money, price
from tests.dashboard.conftest import BTC, ETH, TOKEN, Served

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output"
WAIT_MS = 5_000  # the page polls every 0.3 s here


def require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the dashboard browser test needs Debian's chromium at {CHROMIUM}: run `make test` as root "
            "(it installs it) or `apt-get install chromium`"
        )


async def test_the_dashboard_in_chromium(served: Served) -> None:
    require_chromium()
    reg = served.bot.registry
    btc_mark = price(reg.market_data.mark(BTC), reg.products[BTC])
    eth_mark = price(reg.market_data.mark(ETH), reg.products[ETH])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # A wrong token: 401 and none of the bot's data, for the page and for the API.
            stranger = await browser.new_page()
            response = await stranger.goto(f"{served.url}/dashboard?token=wrong-{TOKEN}")
            assert response is not None and response.status == 401
            text = await stranger.content()
            assert BTC not in text and "wrong or missing dashboard token" in text
            api = await stranger.request.get(f"{served.url}/api/state")
            assert api.status == 401
            await stranger.close()

            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            response = await page.goto(f"{served.url}/dashboard?token={TOKEN}")
            assert response is not None and response.status == 200
            assert "token=" not in page.url  # the token left the address bar for the cookie
            await shows_the_bot(page, served, btc_mark, eth_mark)
            await follows_it_live(page, served)
            OUTPUT.mkdir(parents=True, exist_ok=True)
            shot = OUTPUT / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            assert errors == []
        finally:
            await browser.close()


async def shows_the_bot(page: Page, served: Served, btc_mark: str | None, eth_mark: str | None) -> None:
    reg = served.bot.registry
    position = page.locator("#positions tbody tr", has_text=BTC)
    await expect(position).to_contain_text("long", timeout=WAIT_MS)
    await expect(position).to_contain_text("25")
    await expect(position).to_contain_text("2030-12-20")  # its expiry
    await expect(page.locator("#marks tbody tr", has_text=BTC)).to_contain_text(str(btc_mark))
    await expect(page.locator("#marks tbody tr", has_text=ETH)).to_contain_text(str(eth_mark))
    await expect(page.locator("#marks tbody tr", has_text=BTC)).to_contain_text("fresh")
    order = page.locator("#orders tbody tr", has_text=ETH)
    await expect(order).to_contain_text("LIMIT")
    await expect(order).to_contain_text("15")
    await expect(page.locator("#equity")).to_have_text(str(money(reg.execution.account.equity)))
    await expect(page.locator("#pnl-fees")).to_have_text(str(money(reg.execution.pnl().fees)))
    await expect(page.locator("#health")).to_have_text("ok")
    await expect(page.locator("#risk-mode")).to_have_text("normal")
    await expect(page.locator("#alerts-active")).to_contain_text("no mark update for 75 s")
    assert await page.locator("#equity-chart polyline").count() == 1
    snapshots = reg.events.query(kind="snapshot", run_id=reg.events.run_id)
    figures = [Decimal(e.data["equity"]) for e in snapshots] + [reg.execution.account.equity]
    await expect(page.locator("#equity-range")).to_contain_text(f"{money(min(figures))} – {money(max(figures))} USD")


async def follows_it_live(page: Page, served: Served) -> None:
    """Changes in the bot show up without a reload."""
    reg = served.bot.registry
    served.health = {"status": "degraded", "reasons": ["reduce-only: config"]}
    reg.risk.enter_reduce_only("config", "test")  # one the running controls leave alone
    reg.risk.enter_symbol_reduce_only(BTC, "late_fill", "test")
    reg.alerts.fire("order_failures", "P2", "order failure rate 40% over 10 min")
    served.clock.advance(6)  # marks age past mark_warn_seconds
    await expect(page.locator("#health")).to_have_text("degraded", timeout=WAIT_MS)
    await expect(page.locator("#risk-mode")).to_have_text("reduce-only")
    await expect(page.locator("#reasons")).to_contain_text("config")
    await expect(page.locator("#reasons")).to_contain_text(f"reduce-only {BTC} late_fill")
    await expect(page.locator("#alerts-active")).to_contain_text("order failure rate 40%")
    await expect(page.locator("#marks tbody tr", has_text=BTC)).to_contain_text("aging")
