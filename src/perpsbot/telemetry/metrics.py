"""Prometheus metrics, on a registry of the bot's own (many bots can live in one process).

Two kinds of source:

* events — ``BotMetrics.on_event`` listens on the event store, so whatever records an
  order, a risk rejection, an alert or a backup (``backup_completed`` with
  ``duration_seconds``) moves its counter or histogram, with no metrics code in the
  trading path;
* live state — ``LiveCollector`` reads mark ages and update counts, the stream's
  lag histogram, heartbeat age, reconnects and the risk mode at scrape time.

The cycle time is observed by ``PerpsBot.run_cycle``; process RSS and CPU come from
prometheus-client's process collector. Every name starts with ``perpsbot_``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from perpsbot.telemetry.health import STATUS_CODES, evaluate

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

PREFIX = "perpsbot"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKUP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class BotMetrics:
    def __init__(self, bot: PerpsBot) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.order_latency = Histogram(
            f"{PREFIX}_order_latency_seconds", "Decision to exchange acknowledgement of a placed order",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.orders_placed = Counter(f"{PREFIX}_orders_placed", "Orders the exchange accepted", ["symbol"], registry=r)
        self.orders_failed = Counter(
            f"{PREFIX}_orders_failed", "Orders rejected by the exchange or of unknown fate, by reason", ["reason"],
            registry=r,
        )
        self.risk_rejections = Counter(
            f"{PREFIX}_risk_rejections", "Orders the risk manager refused, by reason", ["reason"], registry=r
        )
        self.cycle_time = Histogram(
            f"{PREFIX}_cycle_seconds", "Duration of one trading cycle", buckets=CYCLE_BUCKETS, registry=r
        )
        self.backup_duration = Histogram(
            f"{PREFIX}_backup_duration_seconds", "Duration of a completed store backup", buckets=BACKUP_BUCKETS,
            registry=r,
        )
        self.alerts_fired = Counter(
            f"{PREFIX}_alerts", "Alerts fired, by rule and severity", ["rule", "severity"], registry=r
        )
        self.strategy_errors = Counter(
            f"{PREFIX}_strategy_errors", "Strategy answers dropped (raised, nonsense, over budget)", ["symbol"],
            registry=r,
        )
        ProcessCollector(namespace=PREFIX, registry=r)
        r.register(LiveCollector(bot))

    def on_event(self, kind: str, symbol: str | None, data: dict[str, Any]) -> None:
        if kind == "order_placed":
            self.orders_placed.labels(symbol=symbol or "").inc()
            if data.get("latency_ms") is not None:
                self.order_latency.observe(float(data["latency_ms"]) / 1000)
        elif kind in ("order_rejected", "order_failed"):
            self.orders_failed.labels(reason=str(data.get("code") or kind)).inc()
        elif kind == "order_unknown":
            self.orders_failed.labels(reason="unknown_fate").inc()
        elif kind == "risk_rejected":
            self.risk_rejections.labels(reason=str(data.get("code"))).inc()
        elif kind == "backup_completed":
            self.backup_duration.observe(float(data["duration_seconds"]))
        elif kind == "error" and data.get("stage") == "strategy":
            self.strategy_errors.labels(symbol=symbol or "").inc()
        elif kind == "alert":
            self.alerts_fired.labels(rule=str(data.get("rule")), severity=str(data.get("severity"))).inc()

    def observe_cycle(self, seconds: float) -> None:
        self.cycle_time.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LiveCollector:
    """Figures read from the bot's services when Prometheus scrapes."""

    def __init__(self, bot: PerpsBot) -> None:
        self.bot = bot

    def describe(self) -> list[Metric]:
        return []  # families depend on the symbols and the stream: no fixed description

    def collect(self) -> Iterator[Metric]:
        reg = self.bot.registry
        md = reg.market_data
        updates = CounterMetricFamily(f"{PREFIX}_mark_updates", "Marks taken per symbol (polled or streamed)",
                                      labels=["symbol"])
        age = GaugeMetricFamily(f"{PREFIX}_mark_age_seconds",
                                "Seconds since the symbol's mark was last known to hold", labels=["symbol"])
        for symbol in md.symbols:
            updates.add_metric([symbol], md.update_counts.get(symbol, 0))
            mark_age = md.mark_age(symbol)
            age.add_metric([symbol], math.inf if mark_age is None else mark_age)
        yield updates
        yield age
        yield from self._stream()
        yield from self._pushed()
        risk = reg.risk
        yield GaugeMetricFamily(f"{PREFIX}_reduce_only", "1 while the risk manager allows only reducing orders",
                                value=int(risk.reduce_only))
        yield GaugeMetricFamily(f"{PREFIX}_kill_switch", "1 while the risk manager refuses every order",
                                value=int(risk.killed))
        symbol_ro = GaugeMetricFamily(f"{PREFIX}_symbol_reduce_only",
                                      "1 while a symbol allows only reducing orders (a holding our records do not "
                                      "explain, a late fill)", labels=["symbol"])
        for symbol in md.symbols:
            symbol_ro.add_metric([symbol], int(symbol in risk.symbol_reduce_only))
        yield symbol_ro
        active = GaugeMetricFamily(f"{PREFIX}_alert_active", "1 while an alert is active",
                                   labels=["rule", "severity"])
        for rule, alert in sorted(reg.alerts.active.items()):
            active.add_metric([rule, str(alert["severity"])], 1)
        yield active
        yield GaugeMetricFamily(f"{PREFIX}_health_status", "Health: 0 ok, 1 degraded, 2 failing",
                                value=STATUS_CODES[evaluate(self.bot)["status"]])
        yield GaugeMetricFamily(f"{PREFIX}_cycles", "Trading cycles completed", value=self.bot.cycles)

    def _stream(self) -> Iterator[Metric]:
        streaming = self.bot.registry.streaming
        connected = GaugeMetricFamily(f"{PREFIX}_ws_connected", "1 while the market data stream is connected")
        reconnects = CounterMetricFamily(f"{PREFIX}_ws_reconnects", "Market data stream reconnects")
        heartbeat = GaugeMetricFamily(f"{PREFIX}_ws_heartbeat_lag_seconds",
                                      "Seconds since the exchange's last heartbeat message")
        lag = HistogramMetricFamily(f"{PREFIX}_ws_message_lag_seconds",
                                    "Exchange time of a market data message to its mark")
        if streaming is None:  # polled marks: an idle stream
            connected.add_metric([], 0)
            reconnects.add_metric([], 0)
            lag.add_metric([], [(str(b), 0) for b in LAG_BUCKETS] + [("+Inf", 0)], sum_value=0)
        else:
            connected.add_metric([], int(streaming.connected))
            reconnects.add_metric([], streaming.counters()["reconnects"])
            hb_age = streaming.heartbeat_age()
            if hb_age is not None:
                heartbeat.add_metric([], hb_age)
            lag.add_metric([], lag_buckets(streaming.lag), sum_value=streaming.lag.sum)
        yield connected
        yield reconnects
        yield heartbeat
        yield lag


    def _pushed(self) -> Iterator[Metric]:
        pushed = self.bot.registry.execution.pushed
        healthy = GaugeMetricFamily(f"{PREFIX}_push_healthy",
                                    "1 while the user stream is subscribed and heard from (fills are pushed)")
        orders = CounterMetricFamily(f"{PREFIX}_order_updates",
                                     "Order changes applied, by source: push (user stream) or poll (REST)",
                                     labels=["source"])
        account = CounterMetricFamily(f"{PREFIX}_account_updates", "Account figures taken, by source: push or poll",
                                      labels=["source"])
        rejected = CounterMetricFamily(f"{PREFIX}_push_rejected", "Pushed frames refused unread, by code",
                                       labels=["code"])
        healthy.add_metric([], int(pushed is not None and pushed.healthy))
        if pushed is not None:
            for source in ("push", "poll"):
                orders.add_metric([source], pushed.applied[source])
                account.add_metric([source], pushed.account_updates[source])
            for code, count in sorted(pushed.rejected.items()):
                rejected.add_metric([code], count)
        yield from (healthy, orders, account, rejected)
        margin = pushed.margin if pushed is not None else None
        if margin is not None:
            yield GaugeMetricFamily(f"{PREFIX}_futures_buying_power", "Futures buying power the venue last pushed",
                                    value=float(margin.buying_power))
            yield GaugeMetricFamily(f"{PREFIX}_futures_liquidation_buffer",
                                    "Liquidation buffer (amount) the venue last pushed",
                                    value=float(margin.liquidation_buffer))


def lag_buckets(histogram: Any) -> list[tuple[str, float]]:
    """The stream's fine log-spaced histogram folded into Prometheus's cumulative
    buckets: a fine bucket counts below a bound when its upper edge is within it."""
    edges = [histogram.upper_edge(i) for i in range(histogram.BUCKETS)]
    cumulative = []
    running = 0
    index = 0
    for bound in LAG_BUCKETS:
        stop = bisect.bisect_right(edges, bound * (1 + 1e-12))
        running += sum(histogram.counts[index:stop])
        index = max(index, stop)
        cumulative.append((str(bound), running))
    cumulative.append(("+Inf", histogram.total))
    return cumulative
