"""``SimExchange`` behind the async ``Exchange`` port, driven by a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from perpsbot.domain import OrderStatus, ProductType, Side, TimeInForce
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.port import Exchange, OrderNotFound, OrderRejected, UnknownProduct
from perpsbot.exchange.sim import SimConfig, SimCore, SimExchange, default_products
from tests.unit.sim.simkit import T0, build_core, request, sim_perp, sim_spot

D = Decimal


def make(seed: int = 1) -> tuple[SimExchange, ManualClock]:
    clock = ManualClock(T0)
    return SimExchange(build_core(seed=seed), clock), clock


async def test_it_is_an_exchange_that_follows_the_clock():
    ex, clock = make()
    port: Exchange = ex
    assert port.name == "sim"
    assert [p.symbol for p in await port.products()] == ["TST-USD", "TST-PERP"]
    q0 = await port.quote("TST-USD")
    assert q0.ts == T0
    clock.advance(2.55)
    q1 = await port.quote("TST-USD")
    assert q1.ts == T0 + timedelta(seconds=2.5)  # the last grid tick at or before now
    assert ex.core.now == q1.ts
    assert (await ex.book("TST-USD", 2)).ts == q1.ts
    await port.close()


async def test_unknown_symbols_raise_unknown_product():
    ex, _ = make()
    with pytest.raises(UnknownProduct):
        await ex.quote("NOPE-USD")
    with pytest.raises(UnknownProduct):
        await ex.candles("NOPE-USD", 60, 10)
    with pytest.raises(UnknownProduct):
        await ex.place_order(request("x", "NOPE-USD", Side.BUY, "1"))
    with pytest.raises(OrderRejected):
        await ex.place_order(request("y", "NOPE-USD", Side.BUY, "1"))
    assert (await ex.get_order("y")).status is OrderStatus.REJECTED
    with pytest.raises(OrderNotFound):
        await ex.get_order("missing")


async def test_orders_fills_and_account_through_the_port():
    ex, clock = make(seed=21)
    snap = await ex.place_order(request("m", "TST-USD", Side.BUY, "2"))
    assert snap.status is OrderStatus.FILLED and snap.created_at == T0
    bid = (await ex.quote("TST-USD")).bid
    await ex.place_order(request("l", "TST-USD", Side.BUY, "1", limit=bid - D("0.05"), tif=TimeInForce.GTC))
    assert [o.client_order_id for o in await ex.open_orders()] == ["l"]
    fills, cursor = await ex.fills_since(0)
    assert cursor == len(fills) == len(snap.fills)
    for _ in range(600):  # the resting order fills as simulated time passes
        clock.advance(1.0)
        if (await ex.get_order("l")).status is OrderStatus.FILLED:
            break
    assert (await ex.get_order("l")).status is OrderStatus.FILLED
    new, cursor2 = await ex.fills_since(cursor)
    assert [f.client_order_id for f in new] == ["l"] and cursor2 == cursor + 1
    assert new[0].ts <= clock.now()
    acct = await ex.account()
    assert acct.balances["TST"].available == 3
    cancelled = await ex.cancel_order("l")
    assert cancelled.status is OrderStatus.FILLED


async def test_candles_through_the_port_are_closed_and_recent():
    ex, clock = make()
    clock.advance(20.3)
    candles = await ex.candles("TST-PERP", 5, 3)
    assert [c.start for c in candles] == [T0 + timedelta(seconds=s) for s in (5, 10, 15)]


async def test_observing_every_tick_or_every_second_gives_the_same_market():
    fine, fine_clock = make(seed=6)
    coarse, coarse_clock = make(seed=6)
    for k in range(1, 201):
        fine_clock.advance(0.1)
        q = await fine.quote("TST-PERP")
        if k % 10 == 0:
            coarse_clock.advance(1.0)
            assert await coarse.quote("TST-PERP") == q


async def test_a_core_without_a_start_is_anchored_by_the_first_call():
    clock = ManualClock(T0 + timedelta(hours=3))
    core = SimCore([sim_spot(), sim_perp()], SimConfig(seed=1, warmup_seconds=60.0))
    assert not core.started
    ex = SimExchange(core, clock)
    q = await ex.quote("TST-USD")
    assert q.ts == clock.now() and core.start == clock.now()
    assert len(await ex.candles("TST-USD", 5, 100)) == 12  # the warm-up made a minute of history


async def test_default_listing_through_the_port():
    clock = ManualClock(T0)
    ex = SimExchange(SimCore(default_products(), SimConfig(seed=7, warmup_seconds=30.0), start=T0), clock)
    products = {p.symbol: p for p in await ex.products()}
    assets = ("BTC", "ETH", "SOL", "DOGE", "XRP", "AVAX", "LINK")
    cfm = {"BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "BIT-26MAR27-CDE"}
    assert set(products) == {f"{a}-USD" for a in assets} | cfm
    bip = products["BIP-20DEC30-CDE"]
    assert bip.is_perpetual and bip.contract_size == D("0.01") and bip.base_increment == D(1)
    assert bip.type is ProductType.PERPETUAL and bip.max_leverage == 10
    assert bip.price_increment == D(5) and bip.min_size == D(1)
    assert products["ETP-20DEC30-CDE"].contract_size == D("0.1")
    assert products["ETP-20DEC30-CDE"].max_leverage == 10
    assert bip.expiry == datetime(2030, 12, 20, 16, tzinfo=UTC)  # perpetual-style: far out
    dated = products["BIT-26MAR27-CDE"]
    assert dated.type is ProductType.FUTURE and not dated.is_perpetual and dated.is_derivative
    assert dated.expiry == datetime(2027, 3, 26, 16, tzinfo=UTC) and dated.contract_size == D("0.01")
    spot = products["BTC-USD"]
    assert spot.base_increment == D("0.00000001") and spot.min_size == D("0.00001")
    snap = await ex.place_order(request("p", "BIP-20DEC30-CDE", Side.BUY, "5", leverage="5"))  # 0.05 BTC
    assert snap.status is OrderStatus.FILLED
    acct = await ex.account()
    assert acct.positions["BIP-20DEC30-CDE"].size == D(5)
    assert acct.positions["BIP-20DEC30-CDE"].contract_size == D("0.01")
    assert acct.equity < D(100_000)  # paid the spread and a fee
    assert acct.equity > D(99_900)


async def test_order_latency_setting_delays_placement_on_the_clock():
    import asyncio

    clock = ManualClock(T0)
    ex = SimExchange(build_core(seed=1), clock, order_latency_seconds=0.25)
    placing = asyncio.create_task(ex.place_order(request("slow", "TST-USD", Side.BUY, "1")))
    await asyncio.sleep(0)
    clock.advance(0.2)
    await asyncio.sleep(0)
    assert not placing.done()  # still "on the wire"
    clock.advance(0.05)
    snap = await placing
    assert snap.status is OrderStatus.FILLED
    with pytest.raises(ValueError):
        SimExchange(build_core(seed=1), clock, order_latency_seconds=-1)
