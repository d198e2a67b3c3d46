"""A seeded synthetic market for one product, on a fixed time grid.

The model lives on the grid ``t_n = n * tick_seconds`` (``n`` counted from the
Unix epoch, in integer microseconds, so no float drift). Stepping from tick
``n`` to ``n + 1`` draws the same random numbers whatever the caller observes,
so one seed gives one price path whether it is looked at every tick, every
second or only at the end.

Two random streams drive a model:

* the *underlying* stream, seeded from (global seed, ``UnderlyingParams.key``):
  the log-price diffusion, the volatility-regime switches and the jumps. A spot
  product and the perpetual on the same asset share a key, so they follow the
  same index path;
* the *product* stream, seeded from (global seed, symbol): trades (arrival,
  side, size) and, for perpetuals, the premium over the index (an
  Ornstein-Uhlenbeck process) from which funding rates are derived.

Book sizes come from a stateless hash of (seed, symbol, tick, level), so
reading the book never consumes randomness.

Inside the loop everything is float and int: prices are integer multiples of
the product's price increment ("ticks"), sizes integer multiples of its base
increment ("units"). Decimals are built only when a quote, book or candle is
asked for.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import chain

from perpsbot.domain import BookLevel, Candle, OrderBook, Product, Quote, require_aware
from perpsbot.domain.clock import EPOCH

_ONE_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
_NEVER = 1 << 62
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FUNDING_BASIS_S = 28_800  # premiums are quoted per 8 hours, as on most perp venues
_RATE_QUANTUM = Decimal("1e-12")

BID = 0
ASK = 1


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch (exact integer)."""
    require_aware(ts, "simulator time")
    return (ts - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def derive_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from the global seed and labels (stable across runs and
    platforms; never Python's salted ``hash()``)."""
    text = "|".join([str(int(seed)), *parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _mix64(z: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash."""
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


# ----- parameters ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Regime:
    """A volatility regime: per-second log volatility, a multiplier on the
    product's spread, and the mean time spent in it before switching."""

    name: str
    vol_per_sec: float
    spread_mult: float
    mean_duration_s: float

    def __post_init__(self) -> None:
        if self.vol_per_sec < 0 or self.spread_mult <= 0 or self.mean_duration_s <= 0:
            raise ValueError(f"regime {self.name}: vol >= 0, spread_mult > 0, mean_duration_s > 0")


def standard_regimes(vol_per_sec: float) -> tuple[Regime, ...]:
    """calm / normal / stormy around a base ("normal") per-second volatility."""
    return (
        Regime("calm", vol_per_sec * 0.5, 0.7, 300.0),
        Regime("normal", vol_per_sec, 1.0, 600.0),
        Regime("stormy", vol_per_sec * 2.5, 3.0, 90.0),
    )


#: Row i: probabilities of moving from regime i to each regime when i ends.
STANDARD_TRANSITIONS: tuple[tuple[float, ...], ...] = (
    (0.0, 0.8, 0.2),
    (0.6, 0.0, 0.4),
    (0.3, 0.7, 0.0),
)


@dataclass(frozen=True, slots=True)
class UnderlyingParams:
    """The asset's price process. Products with equal ``UnderlyingParams`` (and
    the same tick and start) follow the same index path."""

    key: str
    start_price: float
    regimes: tuple[Regime, ...]
    transitions: tuple[tuple[float, ...], ...] = STANDARD_TRANSITIONS
    initial_regime: int = 1
    drift_per_sec: float = 0.0
    jump_rate_per_sec: float = 1.0 / 1800.0
    jump_mean: float = 0.0
    jump_std: float = 0.002

    def __post_init__(self) -> None:
        if not self.start_price > 0:
            raise ValueError(f"underlying {self.key}: start_price must be > 0")
        if not self.regimes:
            raise ValueError(f"underlying {self.key}: needs at least one regime")
        k = len(self.regimes)
        if len(self.transitions) != k or any(len(row) != k for row in self.transitions):
            raise ValueError(f"underlying {self.key}: transitions must be {k}x{k}")
        for i, row in enumerate(self.transitions):
            if any(p < 0 for p in row) or (k > 1 and not math.isclose(sum(row), 1.0, abs_tol=1e-9)):
                raise ValueError(f"underlying {self.key}: transition row {i} must be probabilities summing to 1")
        if not 0 <= self.initial_regime < k:
            raise ValueError(f"underlying {self.key}: initial_regime out of range")
        if self.jump_rate_per_sec < 0 or self.jump_std < 0:
            raise ValueError(f"underlying {self.key}: jump rate and size must be >= 0")


@dataclass(frozen=True, slots=True)
class MarketParams:
    """Microstructure of one product on top of its underlying."""

    underlying: UnderlyingParams
    spread_bps: float = 2.0  # full bid/ask spread in a regime with spread_mult 1
    level_step_bps: float = 1.0  # distance between book levels
    top_depth: float = 1.0  # mean size at the best level, base units
    depth_growth: float = 0.35  # level i holds (1 + growth * i) times the top size on average
    trades_per_sec: float = 4.0
    mean_trade_size: float = 0.1  # base units
    premium_mean: float = 0.00005  # perpetuals: mean premium over the index
    premium_std: float = 0.0003  # perpetuals: stationary std of the premium
    premium_half_life_s: float = 60.0
    funding_cap: float = 0.0075  # |premium| used for funding is capped here (per 8 h)

    def __post_init__(self) -> None:
        if self.spread_bps <= 0 or self.level_step_bps <= 0:
            raise ValueError("spread_bps and level_step_bps must be > 0")
        if self.top_depth <= 0 or self.mean_trade_size <= 0 or self.trades_per_sec < 0:
            raise ValueError("top_depth, mean_trade_size must be > 0, trades_per_sec >= 0")
        if self.premium_std < 0 or self.premium_half_life_s <= 0 or self.funding_cap < 0:
            raise ValueError("premium_std >= 0, premium_half_life_s > 0, funding_cap >= 0")


# ----- outputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundingTick:
    """A funding rate the model published at grid tick ``tick``."""

    tick: int
    ts: datetime
    rate: Decimal


# ----- the model ----------------------------------------------------------------------


class MarketModel:
    """One product's synthetic market. ``step_to(n)`` moves it along the grid."""

    live = True  # an order trades at the tick it is placed on

    def __init__(
        self,
        product: Product,
        params: MarketParams,
        *,
        seed: int,
        start: datetime,
        tick_seconds: float = 0.1,
        book_levels: int = 10,
        funding_interval_seconds: float = 3600.0,
        second_bars: int = 7200,
        minute_bars: int = 2880,
    ) -> None:
        tick_us = round(tick_seconds * _US_PER_S)
        if tick_us <= 0:
            raise ValueError("tick_seconds must be at least one microsecond")
        if book_levels < 1:
            raise ValueError("book_levels must be >= 1")
        self.product = product
        self.params = params
        self.symbol = product.symbol
        self.book_levels = book_levels
        self.tick_us = tick_us
        self._dt = tick_us / _US_PER_S
        self._perp = product.is_perpetual
        und = params.underlying

        n0 = to_us(start) // tick_us
        self._n = n0
        self.start_tick = n0

        self._ru = random.Random(derive_seed(seed, "underlying", und.key))
        self._rm = random.Random(derive_seed(seed, "product", product.symbol))
        self._book_seed = derive_seed(seed, "book", product.symbol)

        self._inc = product.price_increment
        self._base_inc = product.base_increment
        self._inc_f = float(product.price_increment)
        self._inv_inc = 1.0 / self._inc_f
        base_inc_f = float(product.base_increment)
        self._top_units = params.top_depth / base_inc_f
        self._mean_trade_units = params.mean_trade_size / base_inc_f
        self._p_trade = min(1.0, params.trades_per_sec * self._dt)
        self._inv_p_trade = 1.0 / self._p_trade if self._p_trade > 0 else 0.0

        # price state
        self._x = math.log(und.start_price)
        self._prem = params.premium_mean if self._perp else 0.0
        if self._perp:
            kappa = math.log(2.0) / params.premium_half_life_s
            self._pk = 1.0 - math.exp(-kappa * self._dt)  # exact OU discretisation
            self._pmu = params.premium_mean
            self._ps = params.premium_std * math.sqrt(1.0 - math.exp(-2.0 * kappa * self._dt))
        else:
            self._pk = self._pmu = self._ps = 0.0

        # regime
        self._regimes = und.regimes
        self._regime = und.initial_regime
        self._set_regime_constants()
        self._next_switch = self._schedule_switch(n0)
        self._next_jump = self._schedule_jump(n0)

        # trades and bars
        mid = self.mid_float()
        self._last = max(1, round(mid * self._inv_inc))  # last trade, in ticks
        self._last_trade_tick = n0
        self._last_trade_units = 0
        self._volume_units = 0  # cumulative traded volume
        sec = (n0 * tick_us) // _US_PER_S
        self._bar = [sec, self._last, self._last, self._last, self._last, 0]  # sec, o, h, l, c, v
        self._next_bar = self._first_tick_at_us((sec + 1) * _US_PER_S)
        self._secs: deque[tuple[int, int, int, int, int, int]] = deque(maxlen=max(1, second_bars))
        self._mins: deque[tuple[int, int, int, int, int, int]] = deque(maxlen=max(1, minute_bars))
        self._minute: list[int] | None = None

        # funding (perpetuals)
        self._funding_us = round(funding_interval_seconds * _US_PER_S)
        if self._funding_us <= 0:
            raise ValueError("funding_interval_seconds must be > 0")
        self._psum = 0.0
        self._pcount = 0
        self.funding: deque[FundingTick] = deque(maxlen=1000)
        self.last_funding_tick = -1
        if self._perp:
            t0 = n0 * tick_us
            boundary = (t0 // self._funding_us + 1) * self._funding_us
            self._next_funding = self._first_tick_at_us(boundary)
        else:
            self._next_funding = _NEVER

        self._next_event = min(self._next_bar, self._next_switch, self._next_jump, self._next_funding)

        # per-tick consumption of book liquidity by our own orders
        self._consumed_tick = n0
        self._consumed: dict[tuple[int, int], int] = {}

    # ----- grid -----------------------------------------------------------------------

    def _first_tick_at_us(self, us: int) -> int:
        return -(-us // self.tick_us)

    def tick_at(self, ts: datetime) -> int:
        """The last grid tick at or before ``ts``."""
        return to_us(ts) // self.tick_us

    def tick_time(self, n: int) -> datetime:
        return from_us(n * self.tick_us)

    @property
    def tick(self) -> int:
        return self._n

    @property
    def time(self) -> datetime:
        """Grid time of the current tick."""
        return from_us(self._n * self.tick_us)

    # ----- process ------------------------------------------------------------------

    def _set_regime_constants(self) -> None:
        reg = self._regimes[self._regime]
        dt = self._dt
        mu = self.params.underlying.drift_per_sec
        self._a = (mu - 0.5 * reg.vol_per_sec * reg.vol_per_sec) * dt
        self._b = reg.vol_per_sec * math.sqrt(dt)
        hs = self.params.spread_bps * reg.spread_mult / 20_000.0
        self._lo = (1.0 - hs) * self._inv_inc
        self._hi = (1.0 + hs) * self._inv_inc

    def _schedule_switch(self, n: int) -> int:
        if len(self._regimes) < 2:
            return _NEVER
        mean = self._regimes[self._regime].mean_duration_s
        wait = self._ru.expovariate(1.0 / mean)
        return n + max(1, math.ceil(wait / self._dt))

    def _schedule_jump(self, n: int) -> int:
        rate = self.params.underlying.jump_rate_per_sec
        if rate <= 0:
            return _NEVER
        wait = self._ru.expovariate(rate)
        return n + max(1, math.ceil(wait / self._dt))

    def _events(self, n1: int) -> None:
        """Start-of-tick events for tick ``n1`` (bar roll, regime switch, jump, funding)."""
        if n1 >= self._next_bar:
            self._roll_bar(n1)
        if n1 >= self._next_switch:
            row = self.params.underlying.transitions[self._regime]
            u = self._ru.random()
            acc = 0.0
            nxt = len(row) - 1
            for j, p in enumerate(row):
                acc += p
                if u < acc:
                    nxt = j
                    break
            self._regime = nxt
            self._set_regime_constants()
            self._next_switch = self._schedule_switch(n1)
        if n1 >= self._next_jump:
            und = self.params.underlying
            self._x += self._ru.gauss(und.jump_mean, und.jump_std)
            self._next_jump = self._schedule_jump(n1)
        if n1 >= self._next_funding:
            twap = self._psum / self._pcount if self._pcount else self._prem
            cap = self.params.funding_cap
            twap = min(cap, max(-cap, twap))
            rate = Decimal(twap * self._funding_us / (_FUNDING_BASIS_S * _US_PER_S)).quantize(_RATE_QUANTUM)
            self.funding.append(FundingTick(n1, self.tick_time(n1), rate))
            self.last_funding_tick = n1
            self._psum = 0.0
            self._pcount = 0
            boundary = ((n1 * self.tick_us) // self._funding_us + 1) * self._funding_us
            self._next_funding = self._first_tick_at_us(boundary)
        self._next_event = min(self._next_bar, self._next_switch, self._next_jump, self._next_funding)

    def _roll_bar(self, n1: int) -> None:
        bar = self._bar
        done = (bar[0], bar[1], bar[2], bar[3], bar[4], bar[5])
        self._secs.append(done)
        minute_start = done[0] - done[0] % 60
        m = self._minute
        if m is None or m[0] != minute_start:
            if m is not None:
                self._mins.append((m[0], m[1], m[2], m[3], m[4], m[5]))
            self._minute = [minute_start, done[1], done[2], done[3], done[4], done[5]]
        elif done[5]:  # a bar without trades adds nothing: it is flat at the close
            if m[5]:
                if done[2] > m[2]:
                    m[2] = done[2]
                if done[3] < m[3]:
                    m[3] = done[3]
            else:
                m[1], m[2], m[3] = done[1], done[2], done[3]
            m[4] = done[4]
            m[5] += done[5]
        sec = (n1 * self.tick_us) // _US_PER_S
        last = self._last
        self._bar = [sec, last, last, last, last, 0]
        self._next_bar = self._first_tick_at_us((sec + 1) * _US_PER_S)

    def step_to(self, target: int) -> None:
        """Advance to grid tick ``target`` (no-op if already there or past it)."""
        n = self._n
        if target <= n:
            return
        gauss = self._ru.gauss
        rnd = self._rm.random
        pgauss = self._rm.gauss
        exp = math.exp
        log = math.log
        floor = math.floor
        ceil = math.ceil
        p_trade = self._p_trade
        inv_pt = self._inv_p_trade
        mean_units = self._mean_trade_units
        perp = self._perp
        pk, pmu, ps = self._pk, self._pmu, self._ps
        while n < target:
            n1 = n + 1
            if n1 >= self._next_event:
                self._events(n1)
            stop = min(target, self._next_event - 1)
            x = self._x
            prem = self._prem
            psum = self._psum
            a, b, lo, hi = self._a, self._b, self._lo, self._hi
            bar = self._bar
            bo, bh, bl, bv = bar[1], bar[2], bar[3], bar[5]
            last = self._last
            vol = self._volume_units
            last_n = self._last_trade_tick
            last_units = self._last_trade_units
            if perp:
                for k in range(n1, stop + 1):
                    x += a + b * gauss()
                    prem += pk * (pmu - prem) + ps * pgauss()
                    psum += prem
                    u = rnd()
                    if u < p_trade:
                        mid = exp(x) * (1.0 + prem)
                        v = u * inv_pt
                        if v < 0.5:
                            last = ceil(mid * hi)
                            w = v + v
                        else:
                            last = floor(mid * lo)
                            w = v + v - 1.0
                        if last < 1:
                            last = 1
                        units = 1 + int(-mean_units * log(1.0 - w))
                        if bv == 0:  # first trade of the bar sets its open
                            bo = bh = bl = last
                        elif last > bh:
                            bh = last
                        elif last < bl:
                            bl = last
                        bv += units
                        vol += units
                        last_n = k
                        last_units = units
                self._pcount += stop - n
            else:
                for k in range(n1, stop + 1):
                    x += a + b * gauss()
                    u = rnd()
                    if u < p_trade:
                        mid = exp(x)
                        v = u * inv_pt
                        if v < 0.5:
                            last = ceil(mid * hi)
                            w = v + v
                        else:
                            last = floor(mid * lo)
                            w = v + v - 1.0
                        if last < 1:
                            last = 1
                        units = 1 + int(-mean_units * log(1.0 - w))
                        if bv == 0:  # first trade of the bar sets its open
                            bo = bh = bl = last
                        elif last > bh:
                            bh = last
                        elif last < bl:
                            bl = last
                        bv += units
                        vol += units
                        last_n = k
                        last_units = units
            self._x = x
            self._prem = prem
            self._psum = psum
            bar[1] = bo
            bar[2] = bh
            bar[3] = bl
            bar[4] = last
            bar[5] = bv
            self._last = last
            self._volume_units = vol
            self._last_trade_tick = last_n
            self._last_trade_units = last_units
            n = stop
        self._n = n

    def advance_to(self, ts: datetime) -> None:
        self.step_to(self.tick_at(ts))

    # ----- float views (cheap, for the engine's per-tick checks) -----------------------

    def mid_float(self) -> float:
        return math.exp(self._x) * (1.0 + self._prem)

    def index_float(self) -> float:
        """The underlying index (no premium)."""
        return math.exp(self._x)

    @property
    def premium(self) -> float:
        return self._prem

    @property
    def regime(self) -> str:
        return self._regimes[self._regime].name

    def best_ticks(self) -> tuple[int, int]:
        """Best bid and ask, in price ticks. ask > bid always."""
        mid = self.mid_float()
        bid = math.floor(mid * self._lo)
        ask = math.ceil(mid * self._hi)
        if bid < 1:
            bid = 1
        if ask <= bid:
            ask = bid + 1
        return bid, ask

    def level_step_ticks(self) -> int:
        return max(1, round(self.params.level_step_bps * 1e-4 * self.mid_float() * self._inv_inc))

    def _level_units_raw(self, side: int, i: int) -> int:
        z = _mix64((self._book_seed + self._n * _GOLDEN) & _M64)
        z = _mix64(z ^ (i * 2 + side))
        u = z / 18446744073709551616.0
        return max(1, int(self._top_units * (1.0 + self.params.depth_growth * i) * (0.4 + 1.2 * u)))

    def _consumption(self) -> dict[tuple[int, int], int]:
        if self._consumed_tick != self._n:
            self._consumed_tick = self._n
            self._consumed = {}
        return self._consumed

    def levels(self, side: int, depth: int | None = None) -> list[tuple[int, int, int]]:
        """Book levels of one side at the current tick, best first, as
        ``(level_index, price_ticks, units_left)``; levels our own orders
        emptied this tick are left out."""
        count = self.book_levels if depth is None else max(0, min(depth, self.book_levels))
        bid, ask = self.best_ticks()
        step = self.level_step_ticks()
        consumed = self._consumption()
        out: list[tuple[int, int, int]] = []
        for i in range(count):
            price = bid - i * step if side == BID else ask + i * step
            if price < 1:
                break
            units = self._level_units_raw(side, i) - consumed.get((side, i), 0)
            if units > 0:
                out.append((i, price, units))
        return out

    def consume(self, side: int, level: int, units: int) -> None:
        """Our own order took ``units`` from a level at the current tick."""
        consumed = self._consumption()
        consumed[(side, level)] = consumed.get((side, level), 0) + units

    # ----- Decimal views ----------------------------------------------------------------

    def price(self, ticks: int) -> Decimal:
        return ticks * self._inc

    def size(self, units: int) -> Decimal:
        return units * self._base_inc

    @property
    def mid(self) -> Decimal:
        return self.product.quantize_price(Decimal(self.mid_float()))

    def crossing(self, level: float) -> Decimal:
        """The price at which the market crossed ``level`` (a liquidation price): on the
        grid a tick is a jump, so the mid it jumped to."""
        return self.mid

    @property
    def last_trade(self) -> Decimal:
        return self.price(self._last)

    @property
    def last_trade_ticks(self) -> int:
        return self._last

    @property
    def tick_volume(self) -> Decimal:
        """Volume traded by the market at the current tick."""
        return self.size(self._last_trade_units if self._last_trade_tick == self._n else 0)

    @property
    def total_volume(self) -> Decimal:
        return self.size(self._volume_units)

    def quote(self) -> Quote:
        bid, ask = self.best_ticks()
        return Quote(self.symbol, self.price(bid), self.price(ask), self.time, self.price(self._last))

    def book(self, depth: int | None = None) -> OrderBook:
        return OrderBook(
            self.symbol,
            self.time,
            tuple(BookLevel(self.price(p), self.size(u)) for _, p, u in self.levels(BID, depth)),
            tuple(BookLevel(self.price(p), self.size(u)) for _, p, u in self.levels(ASK, depth)),
        )

    def candles(self, granularity_seconds: int, limit: int) -> list[Candle]:
        """Closed candles of ``granularity_seconds`` (aligned to epoch multiples),
        oldest first, at most ``limit``. Built from the market's trades: open is
        the bucket's first trade, close its last, volume the size traded; a
        bucket without trades is flat at the previous close with zero volume.
        A bucket with no grid tick at all (only if tick_seconds > 1) is omitted."""
        g = int(granularity_seconds)
        if g != granularity_seconds or g < 1:
            raise ValueError(f"granularity must be a whole number of seconds >= 1, got {granularity_seconds}")
        if limit <= 0:
            return []
        now_sec = (self._n * self.tick_us) // _US_PER_S
        open_bucket = now_sec - now_sec % g
        source = self._mins if g % 60 == 0 else self._secs
        newest: Iterable[tuple[int, int, int, int, int, int]] = reversed(source)
        if source is self._mins and self._minute is not None:
            # the minute being built may already be complete (it is pushed when the next one starts)
            m = self._minute
            newest = chain(((m[0], m[1], m[2], m[3], m[4], m[5]),), newest)
        groups: list[list[int]] = []  # newest first: [bucket, o, h, l, c, v]
        for sec, o, h, lo, c, v in newest:
            bucket = sec - sec % g
            if bucket >= open_bucket:
                continue
            if groups and groups[-1][0] == bucket:
                # walking backwards, merge an older bar into the group; bars
                # without trades are flat at the previous close and add nothing
                grp = groups[-1]
                if v:
                    if grp[5]:
                        grp[1] = o
                        if h > grp[2]:
                            grp[2] = h
                        if lo < grp[3]:
                            grp[3] = lo
                    else:
                        grp[1], grp[2], grp[3] = o, h, lo
                    grp[5] += v
                elif not grp[5]:
                    grp[1] = o
                continue
            if len(groups) == limit:
                break
            groups.append([bucket, o, h, lo, c, v])
        else:
            # ran off the end of a full history: the oldest bucket may be truncated
            if groups and len(source) == source.maxlen and source[0][0] != groups[-1][0]:
                groups.pop()
        out = []
        for bucket, o, h, lo, c, v in reversed(groups):
            out.append(
                Candle(
                    self.symbol,
                    from_us(bucket * _US_PER_S),
                    self.price(o),
                    self.price(h),
                    self.price(lo),
                    self.price(c),
                    self.size(v),
                )
            )
        return out
