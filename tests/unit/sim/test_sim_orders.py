"""Order handling in the simulator core: matching, validation, balances and holds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpsbot.domain import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from perpsbot.exchange.port import OrderNotFound, OrderRejected, OrderRequest, UnknownProduct
from perpsbot.exchange.sim import SimConfig, SimCore
from tests.unit.sim.simkit import T0, at, build_core, request, sim_perp, sim_spot

D = Decimal
START = D(100_000)
TAKER = D("0.0005")
MAKER = D("0.00025")
SPOT = "TST-USD"
PERP = "TST-PERP"


def close(a: Decimal, b: Decimal) -> bool:
    """Equal up to the rounding of Decimal division (an average entry price is rarely exact)."""
    return abs(a - b) < D("1e-15")


def usd(core: SimCore):
    return core.account().balances["USD"]


def base(core: SimCore):
    bal = core.account().balances.get("TST")
    return bal.available if bal else D(0)


def first_tick_where(seed: int, symbol: str, predicate, *, until: float, **config) -> float:
    """Replay the market alone (same seed) and return the first grid time (s after T0)
    where ``predicate(core)`` holds: the price path does not depend on our orders."""
    replica = build_core(seed=seed, **config)
    for k in range(1, round(until * 10) + 1):
        replica.advance_to(at(k / 10))
        if predicate(replica):
            return k / 10
    raise AssertionError("never happened")


# ----- market orders ---------------------------------------------------------------------


def test_market_buy_walks_the_book_level_by_level():
    core = build_core()
    asks = core.book(SPOT).asks
    size = asks[0].size + asks[1].size + D("0.5")
    snap = core.place_order(request("m1", SPOT, Side.BUY, size), T0)
    assert snap.status is OrderStatus.FILLED and snap.filled_size == size
    assert [(f.price, f.size) for f in snap.fills] == [
        (asks[0].price, asks[0].size), (asks[1].price, asks[1].size), (asks[2].price, D("0.5")),
    ]
    assert all(f.liquidity is Liquidity.TAKER and f.fee == f.price * f.size * TAKER for f in snap.fills)
    cost = sum(f.price * f.size + f.fee for f in snap.fills)
    assert usd(core).available == START - cost
    assert base(core) == size
    assert snap.average_fill_price == sum(f.price * f.size for f in snap.fills) / size
    # the liquidity we took is gone for the rest of this tick
    after = core.book(SPOT).asks
    assert after[0] == type(after[0])(asks[2].price, asks[2].size - D("0.5"))


def test_market_order_larger_than_the_book_fills_what_is_there_and_cancels_the_rest():
    core = build_core()
    asks = core.book(SPOT).asks
    depth = sum(lv.size for lv in asks)
    snap = core.place_order(request("big", SPOT, Side.BUY, depth + 10), T0)
    assert snap.status is OrderStatus.CANCELLED
    assert snap.filled_size == depth and len(snap.fills) == len(asks)
    assert core.book(SPOT).asks == ()
    assert core.open_orders() == []


def test_market_sell_walks_the_bids():
    core = build_core()
    core.place_order(request("b", SPOT, Side.BUY, "3"), T0)
    core.advance_to(at(1))
    bids = core.book(SPOT).bids
    snap = core.place_order(request("s", SPOT, Side.SELL, "3"), at(1))
    assert snap.status is OrderStatus.FILLED
    assert snap.fills[0].price == bids[0].price
    assert [f.price for f in snap.fills] == sorted((f.price for f in snap.fills), reverse=True)
    assert base(core) == 0


# ----- limit orders ----------------------------------------------------------------------


def test_resting_limit_buy_holds_cash_then_fills_as_maker_when_the_ask_comes_down():
    seed = 21
    core = build_core(seed=seed)
    limit = core.quote(SPOT).bid - D("0.05")
    size = D("0.5")
    snap = core.place_order(request("l1", SPOT, Side.BUY, size, limit=limit, tif=TimeInForce.GTC), T0)
    assert snap.status is OrderStatus.OPEN and snap.fills == ()
    hold = size * limit * (1 + MAKER)
    assert usd(core).hold == hold and usd(core).available == START - hold
    assert [o.client_order_id for o in core.open_orders()] == ["l1"]

    expected = first_tick_where(seed, SPOT, lambda c: c.quote(SPOT).ask <= limit, until=600)
    for k in range(1, 601):
        core.advance_to(at(k))
        if core.get_order("l1").status is OrderStatus.FILLED:
            break
    snap = core.get_order("l1")
    assert snap.status is OrderStatus.FILLED
    (fill,) = snap.fills
    assert fill.ts == at(expected)  # the first grid tick where the ask reached the limit
    assert fill.price == limit and fill.size == size
    assert fill.liquidity is Liquidity.MAKER and fill.fee == limit * size * MAKER
    assert usd(core).hold == 0 and usd(core).available == START - limit * size * (1 + MAKER)
    assert base(core) == size
    assert core.open_orders() == []


def test_resting_fills_are_bounded_by_the_liquidity_that_crossed():
    seed = 5
    core = build_core(seed=seed)
    limit = core.quote(SPOT).ask + D("0.10")
    size = D("200")  # more than the whole book
    snap = core.place_order(request("g", SPOT, Side.BUY, size, limit=limit, tif=TimeInForce.GTC), T0)
    # it crossed on arrival: taker fills up to the limit, the rest rests
    assert snap.status is OrderStatus.PARTIALLY_FILLED
    taken = snap.filled_size
    assert all(f.liquidity is Liquidity.TAKER and f.price <= limit for f in snap.fills)
    assert usd(core).hold == (size - taken) * limit * (1 + MAKER)

    replica = build_core(seed=seed)
    for k in range(1, 301):
        core.advance_to(at(k / 10))
        replica.advance_to(at(k / 10))
        fills = [f for f in core.get_order("g").fills if f.ts == at(k / 10)]
        crossing = sum((lv.size for lv in replica.book(SPOT).asks if lv.price <= limit), D(0))
        if fills:
            (fill,) = fills
            assert fill.liquidity is Liquidity.MAKER and fill.price == limit
            assert fill.size == min(crossing, size - taken)
            taken += fill.size
        else:
            assert crossing == 0 or taken == size
    final = core.get_order("g")
    assert final.filled_size == taken > snap.filled_size
    assert (final.status is OrderStatus.FILLED) == (taken == size)
    assert len({f.ts for f in final.fills}) > 2  # it took several ticks of liquidity
    assert usd(core).hold == (size - taken) * limit * (1 + MAKER)


def test_ioc_fills_what_crosses_and_cancels_the_rest():
    core = build_core()
    asks = core.book(SPOT).asks
    limit = asks[1].price
    snap = core.place_order(request("ioc", SPOT, Side.BUY, asks[0].size + asks[1].size + 5, limit=limit), T0)
    assert snap.status is OrderStatus.CANCELLED
    assert [(f.price, f.size) for f in snap.fills] == [(asks[0].price, asks[0].size), (asks[1].price, asks[1].size)]
    assert usd(core).hold == 0 and core.open_orders() == []

    miss = core.place_order(request("ioc2", SPOT, Side.BUY, "1", limit=core.quote(SPOT).bid), T0)
    assert miss.status is OrderStatus.CANCELLED and miss.filled_size == 0 and miss.fills == ()


def test_fok_fills_entirely_or_not_at_all():
    core = build_core()
    asks = core.book(SPOT).asks
    limit = asks[2].price
    available = asks[0].size + asks[1].size + asks[2].size
    too_big = core.place_order(
        request("fok1", SPOT, Side.BUY, available + D("0.001"), limit=limit, tif=TimeInForce.FOK), T0
    )
    assert too_big.status is OrderStatus.CANCELLED and too_big.filled_size == 0 and too_big.fills == ()
    assert core.book(SPOT).asks == asks  # nothing was taken
    assert usd(core).available == START and base(core) == 0

    exact = core.place_order(request("fok2", SPOT, Side.BUY, available, limit=limit, tif=TimeInForce.FOK), T0)
    assert exact.status is OrderStatus.FILLED and exact.filled_size == available
    assert len(exact.fills) == 3


def test_cancel_releases_the_hold_and_is_idempotent():
    core = build_core()
    core.place_order(request("b", SPOT, Side.BUY, "4"), T0)
    ask = core.quote(SPOT).ask
    core.place_order(request("s", SPOT, Side.SELL, "3", limit=ask + 5, tif=TimeInForce.GTC), T0)
    assert core.account().balances["TST"].hold == 3 and base(core) == 1
    snap = core.cancel_order("s", at(0.5))
    assert snap.status is OrderStatus.CANCELLED
    assert core.account().balances["TST"].hold == 0 and base(core) == 4
    assert core.cancel_order("s").status is OrderStatus.CANCELLED
    assert core.cancel_order("b").status is OrderStatus.FILLED  # done orders come back unchanged
    with pytest.raises(OrderNotFound):
        core.cancel_order("nope")
    with pytest.raises(OrderNotFound):
        core.get_order("nope")


# ----- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (request("r", "NOPE-USD", Side.BUY, "1"), "unknown_product"),
        (request("r", SPOT, Side.BUY, "0.005"), "invalid_size"),  # below min_size 0.01
        (request("r", SPOT, Side.BUY, "0.0105"), "invalid_size"),  # not a multiple of 0.001
        (request("r", SPOT, Side.BUY, "0"), "invalid_size"),
        (request("r", SPOT, Side.BUY, "1", limit="99.995"), "invalid_price"),  # increment 0.01
        (OrderRequest("r", SPOT, Side.BUY, OrderType.LIMIT, D(1)), "invalid_price"),  # no limit price
        (request("r", SPOT, Side.BUY, "1", leverage="2"), "leverage_too_high"),  # spot has none
        (request("r", PERP, Side.BUY, "1", leverage="11"), "leverage_too_high"),  # max 10
        (request("r", PERP, Side.BUY, "1", leverage="0.5"), "invalid_leverage"),
        (request("r", SPOT, Side.BUY, "1001"), "insufficient_funds"),
        (request("r", SPOT, Side.SELL, "1"), "insufficient_funds"),  # no TST to sell
        (request("r", PERP, Side.SELL, "1", reduce_only=True), "reduce_only_would_increase"),
    ],
)
def test_rejections_raise_and_are_remembered(req, reason):
    core = build_core(sim_spot(depth=40.0), sim_perp(), starting_cash=D(1000))
    with pytest.raises(OrderRejected) as err:
        core.place_order(req, T0)
    assert err.value.reason == reason
    snap = core.get_order("r")
    assert snap.status is OrderStatus.REJECTED and snap.reject_reason == reason
    assert snap.filled_size == 0 and snap.fills == ()
    acct = core.account()
    assert acct.balances["USD"].available == D(1000) and acct.balances["USD"].hold == 0
    assert core.fills_since(0) == ([], 0) and core.open_orders() == []
    # the id stays taken: the same request again gives back the rejected order
    assert core.place_order(req, T0) == snap


def test_unknown_product_is_also_an_unknown_product_error():
    core = build_core()
    with pytest.raises(UnknownProduct):
        core.place_order(request("x", "NOPE-USD", Side.BUY, "1"), T0)
    for call in (lambda: core.quote("NOPE"), lambda: core.book("NOPE"), lambda: core.candles("NOPE", 5, 5)):
        with pytest.raises(UnknownProduct):
            call()


def test_resting_buy_needs_cash_for_its_hold():
    core = build_core(starting_cash=D(50))
    bid = core.quote(SPOT).bid
    with pytest.raises(OrderRejected) as err:
        core.place_order(request("h", SPOT, Side.BUY, "1", limit=bid, tif=TimeInForce.GTC), T0)
    assert err.value.reason == "insufficient_funds"
    ok = core.place_order(request("h2", SPOT, Side.BUY, "0.4", limit=bid, tif=TimeInForce.GTC), T0)
    assert ok.status is OrderStatus.OPEN
    assert usd(core).hold == D("0.4") * bid * (1 + MAKER)


def test_client_order_id_is_idempotent():
    core = build_core()
    first = core.place_order(request("same", SPOT, Side.BUY, "1"), T0)
    core.advance_to(at(2))
    again = core.place_order(request("same", SPOT, Side.BUY, "1"), at(2))
    different = core.place_order(request("same", SPOT, Side.SELL, "5", limit="1"), at(2))
    assert again == first == different
    fills, cursor = core.fills_since(0)
    assert cursor == len(first.fills) == len(fills)
    assert base(core) == 1


def test_fill_log_cursor_and_unique_trade_ids():
    core = build_core()
    core.place_order(request("a", SPOT, Side.BUY, "5"), T0)
    fills, cursor = core.fills_since(0)
    core.place_order(request("b", SPOT, Side.BUY, "5"), T0)
    more, cursor2 = core.fills_since(cursor)
    assert more and all(f.client_order_id == "b" for f in more)
    assert cursor2 == cursor + len(more)
    assert core.fills_since(cursor2) == ([], cursor2)
    ids = [f.trade_id for f in fills + more]
    assert ids == [f"T{i:06d}-{core.run_tag}" for i in range(1, len(ids) + 1)]
    with pytest.raises(ValueError):
        core.fills_since(-1)


def test_ids_repeat_in_a_replay_but_not_in_a_later_run():
    """A replay (same seed, same start) reproduces ids; a run starting at another
    time must not reuse them (the bot's store keys fills by trade id across runs)."""
    def run(start_offset: float) -> tuple[str, str]:
        core = SimCore([sim_spot(), sim_perp()], SimConfig(seed=1, warmup_seconds=5.0), start=at(start_offset))
        snap = core.place_order(request("a", SPOT, Side.BUY, "1"))
        return snap.exchange_order_id, snap.fills[0].trade_id

    assert run(0) == run(0)
    assert run(3600)[0] != run(0)[0] and run(3600)[1] != run(0)[1]


# ----- perpetuals ------------------------------------------------------------------------


def test_perp_open_takes_isolated_margin_and_equity_tracks_unrealised_pnl():
    core = build_core(sim_spot(), sim_perp(depth=20.0))
    snap = core.place_order(request("p", PERP, Side.BUY, "30", leverage="5"), T0)
    assert snap.status is OrderStatus.FILLED
    notional = sum(f.price * f.size for f in snap.fills)
    fees = sum(f.fee for f in snap.fills)
    assert core.margin(PERP) == notional / 5
    assert usd(core).available == START - notional / 5 - fees
    pos = core.account().positions[PERP]
    assert pos.size == 30 and pos.leverage == 5 and pos.fees == fees
    assert pos.entry_price == notional / 30
    core.advance_to(at(20))
    mark = core.market(PERP).mid
    assert close(core.account().equity, START - fees + (mark - pos.entry_price) * 30)


def test_perp_margin_limits_size_by_leverage():
    core = build_core(sim_spot(), sim_perp(depth=20.0), starting_cash=D(1000))
    with pytest.raises(OrderRejected) as err:  # ~2000 USD of margin at 5x
        core.place_order(request("p5", PERP, Side.BUY, "100", leverage="5"), T0)
    assert err.value.reason == "insufficient_funds"
    with pytest.raises(OrderRejected) as err:  # 10x still needs ~1000 plus fees
        core.place_order(request("p10", PERP, Side.BUY, "100", leverage="10"), T0)
    assert err.value.reason == "insufficient_funds"
    snap = core.place_order(request("ok", PERP, Side.BUY, "90", leverage="10"), T0)
    assert snap.status is OrderStatus.FILLED
    assert usd(core).available >= 0
    assert core.margin(PERP) == sum(f.price * f.size for f in snap.fills) / 10


def test_reduce_only_may_only_reduce():
    core = build_core()
    core.place_order(request("open", PERP, Side.BUY, "5", leverage="2"), T0)
    with pytest.raises(OrderRejected) as err:
        core.place_order(request("more", PERP, Side.BUY, "1", reduce_only=True), T0)
    assert err.value.reason == "reduce_only_would_increase"
    core.advance_to(at(10))
    snap = core.place_order(request("close", PERP, Side.SELL, "8", reduce_only=True, leverage="2"), at(10))
    assert snap.size == 5 and snap.status is OrderStatus.FILLED  # clipped to the position
    acct = core.account()
    pos = acct.positions[PERP]
    assert pos.is_flat and core.margin(PERP) == 0
    assert close(acct.balances["USD"].available, START - pos.fees + pos.realized_pnl)
    assert acct.balances["USD"].available == acct.equity
    with pytest.raises(OrderRejected) as err:  # flat: nothing to reduce
        core.place_order(request("again", PERP, Side.SELL, "1", reduce_only=True), at(10))
    assert err.value.reason == "reduce_only_would_increase"


def test_resting_reduce_only_orders_are_cancelled_when_the_position_closes():
    core = build_core()
    core.place_order(request("open", PERP, Side.BUY, "5", leverage="2"), T0)
    far = core.quote(PERP).ask * 2
    core.place_order(request("tp", PERP, Side.SELL, "5", limit=far, tif=TimeInForce.GTC, reduce_only=True), T0)
    assert usd(core).hold == 0  # a reduce-only order needs no margin
    core.place_order(request("flat", PERP, Side.SELL, "5", leverage="2"), at(1))
    assert core.get_order("tp").status is OrderStatus.CANCELLED
    assert core.open_orders() == []


def test_flipping_a_position_reverses_margin():
    core = build_core()
    core.place_order(request("l", PERP, Side.BUY, "4", leverage="4"), T0)
    snap = core.place_order(request("s", PERP, Side.SELL, "10", leverage="2"), at(1))
    pos = core.account().positions[PERP]
    assert pos.size == -6 and pos.leverage == 2
    assert core.margin(PERP) == pos.entry_price * 6 / 2
    assert pos.entry_price == snap.fills[-1].price or len({f.price for f in snap.fills}) > 1


# ----- round trips -----------------------------------------------------------------------


def test_spot_round_trip_equity_is_start_minus_fees_plus_pnl():
    core = build_core()
    buy = core.place_order(request("b", SPOT, Side.BUY, "7"), T0)
    core.advance_to(at(60))
    sell = core.place_order(request("s", SPOT, Side.SELL, "7"), at(60))
    fees = buy.fees + sell.fees
    pnl = sum(f.price * f.size for f in sell.fills) - sum(f.price * f.size for f in buy.fills)
    acct = core.account()
    assert acct.equity == START - fees + pnl == acct.balances["USD"].available  # cash is exact
    assert close(acct.positions[SPOT].realized_pnl, pnl) and acct.positions[SPOT].fees == fees
    assert acct.balances["TST"].total == 0


def test_spot_holdings_count_at_mid():
    core = build_core()
    buy = core.place_order(request("b", SPOT, Side.BUY, "7"), T0)
    core.advance_to(at(30))
    mid = core.market(SPOT).mid
    assert core.account().equity == START - buy.fees - buy.average_fill_price * 7 + 7 * mid


def test_perp_round_trip_equity_is_start_minus_fees_plus_pnl():
    core = build_core()
    short = core.place_order(request("s", PERP, Side.SELL, "9", leverage="3"), T0)
    core.advance_to(at(45))
    cover = core.place_order(request("c", PERP, Side.BUY, "9", leverage="3"), at(45))
    pnl = sum(f.price * f.size for f in short.fills) - sum(f.price * f.size for f in cover.fills)
    acct = core.account()
    assert close(acct.positions[PERP].realized_pnl, pnl)
    assert close(acct.equity, START - short.fees - cover.fees + pnl)
    assert acct.equity == acct.balances["USD"].available
    assert core.margin(PERP) == 0


# ----- determinism -----------------------------------------------------------------------


def _scenario(seed: int):
    core = build_core(seed=seed)
    out = []
    core.place_order(request("a", SPOT, Side.BUY, "3"), T0)
    bid = core.quote(SPOT).bid
    core.place_order(request("b", SPOT, Side.BUY, "2", limit=bid - D("0.03"), tif=TimeInForce.GTC), at(0.35))
    core.place_order(request("c", PERP, Side.SELL, "4", leverage="3"), at(2.5))
    for k in range(1, 121):
        core.advance_to(at(k))
        out.append((core.quote(SPOT), core.quote(PERP)))
    core.place_order(request("d", PERP, Side.BUY, "4", reduce_only=True), at(120))
    fills = core.fills_since(0)[0]
    return out, fills, core.account()


def test_same_seed_and_calls_give_identical_runs():
    quotes1, fills1, acct1 = _scenario(3)
    quotes2, fills2, acct2 = _scenario(3)
    assert quotes1 == quotes2 and fills1 == fills2 and acct1 == acct2
    assert len(fills1) >= 4
    quotes3, fills3, _ = _scenario(4)
    assert quotes3 != quotes1
    assert [(f.price, f.size) for f in fills3] != [(f.price, f.size) for f in fills1]
