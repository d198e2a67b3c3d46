"""A dated future end to end on the in-process simulator: margined in contracts, no funding,
its expiry shown where its product is, refused once expired."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from perpsbot.bot import PerpsBotBuilder
from perpsbot.cli.run import status_view
from perpsbot.config import BotConfig
from perpsbot.domain import OrderStatus, ProductType
from perpsbot.domain.clock import ManualClock
from perpsbot.strategy.base import Decision, Target
from tests.integration.test_cli_basics import perpsbot

D = Decimal
DATED = "BIT-26MAR27-CDE"  # 0.01 BTC a contract, expires 2027-03-26 16:00 UTC


async def test_a_dated_future_trades_shows_its_expiry_and_is_refused_once_expired(tmp_path: Path):
    clock = ManualClock(datetime(2027, 3, 26, 15, 59, 30, tzinfo=UTC))  # 30 s before it expires
    data = tmp_path / "data"
    config = BotConfig(symbols=(DATED,), data_dir=data, bar_seconds=1, short_window=2, long_window=4,
                       leverage=D(2), enable_shorts=True)
    bot = await PerpsBotBuilder(config).with_clock(clock).build()
    await bot.start()
    reg = bot.registry
    try:
        await bot.run_cycle()
        product = reg.products[DATED]
        assert product.type is ProductType.FUTURE and product.expiry == datetime(2027, 3, 26, 16, tzinfo=UTC)
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(status_view(bot))
        row = next(line for line in console.export_text().splitlines() if DATED in line)
        assert "2027-03-26" in row

        mark = reg.market_data.mark(DATED)
        [opened] = await reg.execution.execute_decision(Decision(DATED, Target.SHORT, "test", mark))
        assert opened.outcome == "placed" and opened.order is not None and opened.order.status is OrderStatus.FILLED
        contracts = opened.order.filled_size
        assert contracts == contracts.to_integral_value() and contracts > 0  # whole contracts
        await reg.execution.refresh_account()
        held = reg.execution.account.positions[DATED]
        assert held.size == -contracts and held.contract_size == D("0.01") and held.funding == 0
        [closed] = await reg.execution.execute_decision(Decision(DATED, Target.FLAT, "test", mark))
        assert closed.order is not None and closed.order.filled_size == contracts
        assert opened.order.average_fill_price is not None and closed.order.average_fill_price is not None
        realized = (opened.order.average_fill_price - closed.order.average_fill_price) * contracts * D("0.01")
        [again] = await reg.execution.execute_decision(Decision(DATED, Target.SHORT, "test", mark))
        assert again.outcome == "placed"

        clock.advance(31)  # 16:00:01: expired
        [refused] = await reg.execution.execute_decision(Decision(DATED, Target.FLAT, "test", mark))
        assert refused.outcome == "rejected_by_exchange" and refused.order is not None
        assert refused.order.status is OrderStatus.REJECTED
        reason = refused.order.reject_reason or ""
        assert reason.startswith("product_expired") and "BIT-26MAR27-CDE expired at 2027-03-26T16:00:00+00:00; " \
            "it no longer trades" in reason
        assert reg.execution.account.positions[DATED].funding == 0  # a dated future accrues none
    finally:
        await bot.shutdown()

    (tmp_path / "bot.toml").write_text(f'data_dir = "{data}"\n')
    shown = perpsbot("positions", "--config", "bot.toml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if DATED in line]
    assert len(rows) == 2 and all("2027-03-26 16:00 UTC" in row and "SHORT" in row for row in rows)
    assert "closed" in rows[0] and f" {realized.quantize(D('0.01')):,} " in rows[0]  # contracts x 0.01 BTC
    assert "open" in rows[1]
    orders = perpsbot("orders", "--config", "bot.toml", cwd=tmp_path)
    assert "product_expired" in orders.stdout
