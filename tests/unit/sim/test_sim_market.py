"""The synthetic market: determinism, the fixed grid, the book, regimes, jumps and candles."""

from __future__ import annotations

import math
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest

from perpsbot.exchange.sim import (
    MarketModel,
    MarketParams,
    Regime,
    UnderlyingParams,
    default_products,
)
from perpsbot.exchange.sim.market import ASK, BID, derive_seed
from tests.unit.sim.simkit import T0, at, build_core, flat_underlying, perp_product, spot_product


def model(seed: int = 1, params: MarketParams | None = None, product=None, **kw) -> MarketModel:
    params = params or MarketParams(flat_underlying("TST", 100.0), top_depth=2.0, mean_trade_size=0.5)
    return MarketModel(product or spot_product(), params, seed=seed, start=T0, **kw)


def path(m: MarketModel, ticks: int) -> list[tuple]:
    out = []
    for n in range(m.tick + 1, m.tick + ticks + 1):
        m.step_to(n)
        q = m.quote()
        out.append((q.bid, q.ask, q.last, m.tick_volume))
    return out


# ----- determinism ---------------------------------------------------------------------


def test_same_seed_same_path_and_different_seed_different_path():
    a, b, c = model(seed=5), model(seed=5), model(seed=6)
    pa, pb, pc = path(a, 500), path(b, 500), path(c, 500)
    assert pa == pb
    assert pa != pc
    # the path actually moves (a constant path would make the checks above vacuous)
    assert len({bid for bid, *_ in pa}) > 20


def test_seed_derivation_is_stable_and_label_sensitive():
    assert derive_seed(1, "product", "BTC-USD") == derive_seed(1, "product", "BTC-USD")
    assert derive_seed(1, "product", "BTC-USD") != derive_seed(1, "product", "ETH-USD")
    assert derive_seed(1, "product", "BTC-USD") != derive_seed(2, "product", "BTC-USD")
    assert 0 <= derive_seed(3, "x") < 2**64


def test_products_sharing_an_underlying_follow_the_same_index():
    und = flat_underlying("IDX", 100.0, 0.001)
    spot = model(params=MarketParams(und), product=spot_product())
    perp = model(params=MarketParams(und, premium_std=0.0005), product=perp_product())
    other = model(params=MarketParams(flat_underlying("OTHER", 100.0, 0.001)), product=spot_product())
    for n in (10, 200, 3000):
        for m in (spot, perp, other):
            m.step_to(spot.start_tick + n)
        assert spot.index_float() == perp.index_float()
        assert spot.index_float() != other.index_float()
        # the perpetual trades at its index plus a premium
        assert perp.mid_float() == pytest.approx(perp.index_float() * (1 + perp.premium))
    assert perp.premium != 0


# ----- the fixed grid ------------------------------------------------------------------


def test_observation_frequency_does_not_change_the_path():
    fine, coarse = model(seed=9), model(seed=9)
    start = fine.start_tick
    for n in range(start + 1, start + 3001):
        fine.step_to(n)
        if (n - start) % 10 == 0:  # every second for the coarse observer
            coarse.step_to(n)
            assert coarse.quote() == fine.quote()
            assert coarse.book(5) == fine.book(5)
    assert coarse.candles(5, 100) == fine.candles(5, 100)
    assert coarse.candles(60, 10) == fine.candles(60, 10)


def test_core_quotes_do_not_depend_on_how_often_time_is_observed():
    a = build_core(seed=4)
    b = build_core(seed=4)
    for k in range(1, 301):
        a.advance_to(at(k * 0.1))
        if k % 10 == 0:
            b.advance_to(at(k * 0.1))
            for sym in ("TST-USD", "TST-PERP"):
                assert a.quote(sym) == b.quote(sym)
    # and observing between grid points rounds down to the last grid tick
    a.advance_to(at(30.07))
    assert a.quote("TST-USD").ts == at(30.0)


def test_never_steps_backwards():
    m = model()
    m.step_to(m.start_tick + 100)
    q = m.quote()
    m.step_to(m.start_tick + 50)
    m.advance_to(T0)
    assert m.quote() == q
    assert m.time == T0 + timedelta(seconds=10)


# ----- the book ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", default_products(), ids=lambda s: s.symbol)
def test_book_is_sane_for_every_default_product(spec):
    m = MarketModel(spec.product, spec.market, seed=3, start=T0, book_levels=10)
    p = spec.product
    for n in range(1, 400, 37):
        m.step_to(m.start_tick + n)
        book, q = m.book(), m.quote()
        assert len(book.bids) == len(book.asks) == 10
        assert book.bids[0].price == q.bid < q.ask == book.asks[0].price
        bid_prices = [lv.price for lv in book.bids]
        ask_prices = [lv.price for lv in book.asks]
        assert bid_prices == sorted(bid_prices, reverse=True) and len(set(bid_prices)) == 10
        assert ask_prices == sorted(ask_prices) and len(set(ask_prices)) == 10
        for lv in book.bids + book.asks:
            assert lv.price > 0 and lv.price % p.price_increment == 0
            assert lv.size > 0 and lv.size % p.base_increment == 0
        assert q.last % p.price_increment == 0
        assert m.mid % p.price_increment == 0
        assert q.bid <= m.mid <= q.ask


def test_book_depth_argument_and_consumption():
    m = model()
    m.step_to(m.start_tick + 5)
    full = m.levels(ASK)
    assert len(m.book(3).asks) == 3
    level, _, units = full[0]
    m.consume(ASK, level, units - 1)
    assert m.levels(ASK)[0][2] == 1
    m.consume(ASK, level, 1)
    assert m.levels(ASK)[0] == full[1]  # an emptied level disappears for the rest of the tick
    m.step_to(m.tick + 1)
    assert len(m.levels(ASK)) == len(full)  # liquidity is back on the next tick
    assert len(m.levels(BID)) == len(full)


def test_spread_widens_with_the_volatility_regime():
    regimes = (
        Regime("calm", 0.0002, 0.5, 5.0),
        Regime("stormy", 0.002, 4.0, 5.0),
    )
    und = UnderlyingParams("RG", 100.0, regimes, ((0.0, 1.0), (1.0, 0.0)), initial_regime=0, jump_rate_per_sec=0)
    m = model(params=MarketParams(und, spread_bps=10.0))
    spreads: dict[str, list[float]] = {"calm": [], "stormy": []}
    moves: dict[str, list[float]] = {"calm": [], "stormy": []}
    prev = m.index_float()
    for n in range(1, 6001):
        m.step_to(m.start_tick + n)
        regime = m.regime
        bid, ask = m.best_ticks()
        spreads[regime].append((ask - bid) / m.mid_float() * 0.01 * 1e4)  # bps (price_increment 0.01)
        x = m.index_float()
        moves[regime].append(math.log(x / prev))
        prev = x
    assert len(spreads["calm"]) > 500 and len(spreads["stormy"]) > 500  # it did switch back and forth
    assert statistics.mean(spreads["calm"]) == pytest.approx(5.0, abs=1.0)
    assert statistics.mean(spreads["stormy"]) == pytest.approx(40.0, abs=2.0)
    # per-tick vol is vol_per_sec * sqrt(0.1 s)
    assert statistics.pstdev(moves["calm"][1:]) == pytest.approx(0.0002 * math.sqrt(0.1), rel=0.2)
    assert statistics.pstdev(moves["stormy"][1:]) == pytest.approx(0.002 * math.sqrt(0.1), rel=0.2)


def test_jumps_arrive_as_a_poisson_process():
    und = UnderlyingParams(
        "JMP", 100.0, (Regime("still", 0.0, 1.0, 1e9),), ((1.0,),), initial_regime=0,
        jump_rate_per_sec=0.5, jump_std=0.01,
    )
    m = model(params=MarketParams(und))
    changes, sizes = 0, []
    prev = m.index_float()
    for n in range(1, 20_001):  # 2000 s: about 1000 jumps expected
        m.step_to(m.start_tick + n)
        x = m.index_float()
        if x != prev:
            changes += 1
            sizes.append(math.log(x / prev))
        prev = x
    assert 900 <= changes <= 1100
    assert statistics.pstdev(sizes) == pytest.approx(0.01, rel=0.15)


# ----- trades and candles --------------------------------------------------------------


def _observe(m: MarketModel, ticks: int) -> list[tuple]:
    """(time, last trade, volume traded at this tick) for every tick."""
    seen = []
    for n in range(m.tick + 1, m.tick + ticks + 1):
        m.step_to(n)
        seen.append((m.time, m.last_trade, m.tick_volume))
    return seen


def _expected_candles(seen, before_close, g: int):
    """Rebuild OHLCV from the observed trades: open = first trade, close = last,
    a bucket without trades is flat at the previous close."""
    buckets: dict = {}
    for ts, last, vol in seen:
        start = int(ts.timestamp()) // g * g
        buckets.setdefault(start, []).append((last, vol))
    out = {}
    prev_close = before_close
    for start in sorted(buckets):
        trades = [last for last, vol in buckets[start] if vol > 0]
        volume = sum((vol for _, vol in buckets[start]), Decimal(0))
        if trades:
            out[start] = (trades[0], max(trades), min(trades), trades[-1], volume)
            prev_close = trades[-1]
        else:
            out[start] = (prev_close,) * 4 + (volume,)
    return out


@pytest.mark.parametrize("g", [1, 5, 60])
def test_candles_match_the_observed_trades(g):
    m = model(seed=11, params=MarketParams(flat_underlying("TST", 100.0, 0.001), trades_per_sec=1.5))
    # begin on a minute boundary so every bucket is fully observed
    m.step_to(m.start_tick + 599)  # T0 + 59.9 s
    before = m.last_trade
    m.step_to(m.tick + 1)
    seen = [(m.time, m.last_trade, m.tick_volume)] + _observe(m, 3599)  # up to T0 + 6 min - 0.1 s
    m.step_to(m.tick + 1)  # T0 + 6 min: the bucket ending there is now closed
    expected = _expected_candles(seen, before, g)
    candles = m.candles(g, 10_000)
    got = {int(c.start.timestamp()): (c.open, c.high, c.low, c.close, c.volume) for c in candles}
    for start, ohlcv in expected.items():
        assert got[start] == ohlcv, start
    assert any(v[4] == 0 for v in expected.values()) or g >= 5  # some 1 s buckets had no trade
    # closed candles only, oldest first, aligned to the granularity
    starts = [c.start for c in candles]
    assert starts == sorted(starts)
    assert all(int(s.timestamp()) % g == 0 for s in starts)
    assert starts[-1] + timedelta(seconds=g) <= m.time


def test_candles_respect_limit_and_are_consistent_across_granularities():
    m = model(seed=2)
    m.step_to(m.start_tick + 3000)  # 5 min
    ones = m.candles(1, 10_000)
    fives = m.candles(5, 1000)
    assert len(m.candles(5, 7)) == 7 and m.candles(5, 7) == fives[-7:]
    assert m.candles(5, 0) == []
    by_start = {c.start: c for c in fives}
    for five in fives:
        parts = [c for c in ones if five.start <= c.start < five.start + timedelta(seconds=5)]
        assert len(parts) == 5
        assert five.close == parts[-1].close
        assert five.volume == sum((c.volume for c in parts), Decimal(0))
        assert five.high == max(c.high for c in parts if c.volume) if five.volume else five.high == five.close
    assert len(by_start) == len(fives)
    with pytest.raises(ValueError):
        m.candles(0, 5)


def test_prehistory_gives_candles_at_start():
    core = build_core(warmup_seconds=120.0)
    candles = core.candles("TST-USD", 5, 100)
    assert len(candles) == 24
    assert candles[-1].start == T0 - timedelta(seconds=5)
    assert core.now == T0


def test_candle_history_is_bounded_and_never_returns_a_truncated_bucket():
    small = model(seed=8, second_bars=98, minute_bars=3)
    big = model(seed=8)
    small.step_to(small.start_tick + 6003)  # 10 minutes and a bit
    big.step_to(big.start_tick + 6003)
    assert len(small.candles(1, 10_000)) == 98
    # three stored minutes plus the just-completed one still being assembled
    assert len(small.candles(60, 10_000)) == 4
    fives = small.candles(5, 10_000)
    assert len(fives) == 19  # 98 one-second bars cover 19 whole 5 s buckets and part of a 20th
    assert fives == big.candles(5, 10_000)[-19:]
    assert small.candles(60, 10_000) == big.candles(60, 10_000)[-4:]


# ----- the default listing -------------------------------------------------------------


def test_default_products_move_visibly_and_moving_averages_cross():
    """The paper run trades MA crossovers on 1-5 s bars: in two minutes prices must
    move a few tenths of a percent and a fast/slow average must cross."""
    for seed in range(5):
        core = build_core(*default_products(), seed=seed, warmup_seconds=60.0)
        core.advance_to(at(120))
        for sym in ("BTC-USD", "BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "SOL-USD"):
            closes = [float(c.close) for c in core.candles(sym, 1, 180)]
            assert len(closes) == 180
            assert (max(closes) - min(closes)) / closes[0] > 0.001, (seed, sym)
            fast = [statistics.mean(closes[i - 5:i]) for i in range(20, len(closes) + 1)]
            slow = [statistics.mean(closes[i - 20:i]) for i in range(20, len(closes) + 1)]
            signs = {f > s for f, s in zip(fast, slow, strict=True)}
            assert signs == {True, False}, (seed, sym)


def test_default_products_start_near_their_reference_prices():
    core = build_core(*default_products(), warmup_seconds=0.0)
    assert core.quote("BTC-USD").bid == pytest.approx(Decimal(90_000), rel=Decimal("0.001"))
    assert core.quote("ETP-20DEC30-CDE").bid == pytest.approx(Decimal(3_000), rel=Decimal("0.002"))
    assert core.quote("SOL-USD").bid == pytest.approx(Decimal(150), rel=Decimal("0.002"))
    for p in core.products():
        if p.is_perpetual:
            assert 1 / p.max_leverage > p.maintenance_margin_rate, p.symbol
