"""Acceptance (issue 13): the bot trades a US perpetual-style future end to end against the
simulator server, on a simulated clock that crosses 4 pm New York time (the margin window
turns overnight) and midnight UTC (funding settles):

* contracts sized from equity and quantized to whole contracts of 0.01 BTC;
* a margin-window change (intraday -> overnight) recorded and shown by ``risk status``;
* an order refused because the venue's liquidation buffer is too thin at the overnight
  rates, though the flat 5 % maintenance rate would have let it through;
* funding accrued each hour and settled at midnight UTC, recorded in the bot's PnL to the
  cent — computed here by hand from the position, the listed rates and the marks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.domain import Side
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase.rest import TokenBucket
from perpsbot.exchange.sim import SimConfig, default_products
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer
from perpsbot.risk.measures import projected_liquidation_distance
from perpsbot.strategy.base import Decision, MarketView, Target
from tests.integration.test_cli_basics import perpsbot

from .test_bot_on_coinbase import coinbase_config

BIP, ETP = "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"
D = Decimal
CENT = D("0.01")
# Thursday 3 December 2026, 15:58 in New York (EST): two minutes of intraday margin left.
START = datetime(2026, 12, 3, 20, 58, tzinfo=UTC)
FOUR_PM = datetime(2026, 12, 3, 21, tzinfo=UTC)


class LongBipThenEtp:
    """Long BIP from the start; long ETP too once the clock reaches 4 pm New York time."""

    name = "long-bip-then-etp"
    required_bars = 2

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def decide(self, view: MarketView) -> Decision:
        if view.symbol == ETP and self.clock.now() < FOUR_PM:
            return Decision(view.symbol, Target.HOLD, "test: not yet", view.mark)
        return Decision(view.symbol, Target.LONG, "test: go long", view.mark)

    def forget(self, symbol: str) -> None:
        return None


async def cycles(bot: PerpsBot, n: int = 1) -> None:
    for _ in range(n):
        report = await bot.run_cycle()
        assert not report.errors, report.errors


def funding_by_hand(server: SimServer) -> Decimal:
    """One interval's funding on the BIP position as the venue lists it now: the contracts
    held, the rate just settled, the mark: -contracts x 0.01 BTC x mark x rate."""
    server.step()
    contracts = server.core.account().positions[BIP].size
    rate = server.venue.stats(BIP).funding_rate
    mark = server.core.market(BIP).mid
    assert rate is not None and contracts > 0
    return -contracts * D("0.01") * mark * rate


async def test_the_bot_trades_a_us_perpetual_style_future_end_to_end(tmp_path: Path):
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    clock = ManualClock(START)
    products = [p for p in default_products() if p.symbol in (BIP, ETP)]
    sim = SimConfig(seed=5, starting_cash=D(2000), tick_seconds=1.0)  # hours pass in few ticks
    async with SimServer(seed=5, trust=[key], products=products, sim_config=sim, clock=clock,
                         tick_interval=3600) as server:
        server.core.intraday_margin = True  # the account takes the intraday rates from 8 am to 4 pm
        config = coinbase_config(
            server, tmp_path, api_key_file=key_file, symbols=(BIP, ETP), stream_level="off",
            position_fraction=D("0.5"), leverage=D(8), max_leverage=D(10), max_position_notional=D(50_000),
            max_total_notional=D(50_000), max_order_notional=D(50_000), max_position_equity_share=D(5),
            mark_staleness_seconds=30,
            vol_warn=D(50), vol_reduce_only=D(80), vol_kill=D(100),  # bars an hour apart look wild
            max_drawdown_pct=D("0.8"), kill_drawdown_pct=D("0.9"), daily_loss_limit=D(5000),  # 8x on 2 000 USD
        )
        bot = await PerpsBotBuilder(config).with_clock(clock).with_strategy(LongBipThenEtp(clock)).build()
        bot.registry.exchange.rest.private_bucket = TokenBucket(1000.0)  # hours pass in a second here
        try:
            await bot.start()
            equity = bot.registry.execution.account.equity
            await cycles(bot)
            # 1. sized in whole contracts: half the equity at 8x, over 0.01 BTC at the mark
            (placed,) = [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]
            assert bot.registry.risk.mode == "normal"
            mark = bot.registry.risk.mark_of(BIP)
            assert mark is not None and placed.spec.symbol == BIP
            assert placed.spec.size == (equity * D("0.5") * 8 / (D("0.01") * mark)).to_integral_value(ROUND_DOWN)
            assert placed.spec.size == 8 and server.core.account().positions[BIP].size == 8
            margin = bot.registry.risk.venue_margin
            assert margin is not None and margin.window == "intraday"

            # 2. 4 pm in New York: the window turns overnight; the first funding interval ends
            clock.advance((FOUR_PM - clock.now()).total_seconds())
            by_hand = [funding_by_hand(server)]
            await cycles(bot)
            margin = bot.registry.risk.venue_margin
            assert margin is not None and margin.window == "overnight"
            (changed,) = bot.registry.events.query(kind="margin_window_changed")
            assert changed.data["previous"] == "intraday" and changed.data["window"] == "overnight"
            assert bot.registry.execution.pnl().positions[BIP].funding == by_hand[0]  # accrued, not settled

            # 3. ETP now: refused on the venue's buffer at the overnight rates, allowed by the flat 5 %
            refused = [e for e in bot.registry.events.query(kind="risk_rejected") if e.symbol == ETP]
            assert refused and {e.data["code"] for e in refused} == {"liquidation_buffer"}
            assert "the venue's liquidation buffer" in refused[0].data["detail"]
            assert "overnight maintenance 12.50%" in refused[0].data["detail"]
            size, etp_mark = D(refused[0].data["size"]), bot.registry.risk.mark_of(ETP)
            assert etp_mark is not None
            flat = projected_liquidation_distance(None, ETP, Side.BUY, size, etp_mark, D(8), D("0.05"), D("0.1"))
            assert flat is not None and flat >= config.min_liquidation_distance_pct
            assert not [o for o in server.venue.orders() if o.spec.symbol == ETP]

            # 4. hourly funding to midnight UTC, where it settles
            for hour in (22, 23, 24):
                clock.advance(3600)
                assert clock.now() == START.replace(minute=0) + timedelta(hours=hour - 20)
                by_hand.append(funding_by_hand(server))
                await cycles(bot)
            settled = sum(by_hand, D(0)).quantize(CENT)
            assert settled != 0
            pnl = bot.registry.execution.pnl()
            assert pnl.positions[BIP].funding == settled and pnl.funding == settled
            (recorded,) = bot.registry.events.query(kind="funding_settled")
            assert D(recorded.data["amount"]) == settled and recorded.symbol == BIP
            venue = [e for e in server.core.funding_log if e.symbol == BIP]
            assert len(venue) == 4 and sum((e.payment for e in venue), D(0)).quantize(CENT) == settled
        finally:
            await bot.shutdown()

    # 5. risk status shows the window, its change and the venue's numbers
    status = perpsbot("risk", "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "from the venue: overnight window" in status.stdout
    assert "intraday -> overnight" in status.stdout
    assert "liquidation buffer" in status.stdout and "maintenance rate BIP-20DEC30-CDE" in status.stdout
