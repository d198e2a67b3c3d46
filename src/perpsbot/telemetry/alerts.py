"""The seed's alert rules, evaluated by the bot every cycle, and their webhook.

=====================  ========  ===============================================
rule                   severity  fires while
=====================  ========  ===============================================
``mark_stale``         P1        a symbol has had no fresh mark for
                                 ``alert_mark_stale_seconds`` (60)
``ws_reconnects``      P2        the market stream reconnected more than
                                 ``alert_reconnects`` (5) times within
                                 ``alert_window_seconds`` (300)
``memory_growth``      P2        resident memory grew faster than
                                 ``alert_memory_growth_mb_per_hour`` (20) over
                                 ``alert_memory_window_seconds`` (3600) and in
                                 both halves of it (a one-off jump is not growth)
``order_failures``     P2        more than ``alert_order_failure_rate`` (0.2) of
                                 the orders within ``alert_window_seconds``
                                 failed, once there are ``alert_order_min_orders``
=====================  ========  ===============================================

Firing and resolving go through the ``AlertBook`` (once each, as ``alert`` /
``alert_cleared`` events). ``AlertWebhook`` posts every alert event to
``alert_webhook_url`` as Slack-compatible JSON ``{"text": ...}``; a failed post is
recorded as an ``alert_webhook_failed`` event and never stops the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import aiohttp

    from perpsbot.bot import PerpsBot

log = logging.getLogger(__name__)

MB = 1024 * 1024
MEMORY_SAMPLES = 120  # per memory window: one sample every window / 120
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_QUEUE = 100
WEBHOOK_DRAIN_SECONDS = 2.0
ORDER_OK = "order_placed"
ORDER_FAILED = ("order_rejected", "order_failed", "order_unknown")


_process: psutil.Process | None = None  # made once (it reads /proc/self/stat), again after a fork


def read_rss_bytes() -> int | None:
    """This process's resident memory (psutil, as the run metrics read it); None where
    it cannot be read."""
    global _process
    try:
        if _process is None or _process.pid != os.getpid():
            _process = psutil.Process()
        return int(_process.memory_info().rss)
    except (psutil.Error, OSError):
        return None


class AlertRules:
    def __init__(self, bot: PerpsBot, rss: Callable[[], int | None] = read_rss_bytes) -> None:
        self.bot = bot
        self.rss = rss
        self._first_seen: dict[str, float] = {}  # clock time each symbol was first evaluated
        self._reconnects: deque[tuple[float, int]] = deque()
        self._orders: deque[tuple[float, bool]] = deque()
        self._memory: deque[tuple[float, int]] = deque()

    def on_event(self, kind: str, symbol: str | None, data: dict[str, Any]) -> None:
        if kind == ORDER_OK or kind in ORDER_FAILED:
            self._orders.append((self.bot.clock.now().timestamp(), kind == ORDER_OK))

    def evaluate(self) -> None:
        now = self.bot.clock.now().timestamp()
        self._mark_stale(now)
        self._ws_reconnects(now)
        self._order_failures(now)
        self._memory_growth(now)

    # ----- the rules -------------------------------------------------------------------

    def _mark_stale(self, now: float) -> None:
        config = self.bot.config
        limit = config.alert_mark_stale_seconds
        md = self.bot.registry.market_data
        first_seen = self._first_seen
        for gone in first_seen.keys() - set(md.symbols):  # removed: watched anew if added again
            del first_seen[gone]
        stale = {}
        for symbol in md.symbols:
            age = md.mark_age(symbol)
            if age is None:  # never had a mark: as old as our watch over the symbol
                age = now - self._first_seen.setdefault(symbol, now)
            if age > limit:
                stale[symbol] = round(age, 1)
        book = self.bot.registry.alerts
        if stale:
            shown = ", ".join(f"{s} ({a:g} s)" for s, a in stale.items())
            book.fire("mark_stale", "P1", f"no mark update for over {limit:g} s: {shown}", symbols=sorted(stale))
        else:
            book.clear("mark_stale", "every symbol has a fresh mark")

    def _ws_reconnects(self, now: float) -> None:
        streaming = self.bot.registry.streaming
        if streaming is None:  # no stream, no reconnects: an alert an earlier run left active resolves
            self.bot.registry.alerts.clear("ws_reconnects", "no market stream")
            return
        config = self.bot.config
        total = streaming.counters()["reconnects"]
        samples = self._reconnects
        samples.append((now, total))
        # keep one sample at or before the window's start: the count the window grew from
        while len(samples) > 1 and samples[1][0] <= now - config.alert_window_seconds:
            samples.popleft()
        recent = total - samples[0][1]
        book = self.bot.registry.alerts
        if recent > config.alert_reconnects:
            book.fire("ws_reconnects", "P2",
                      f"{recent} market stream reconnects within {config.alert_window_seconds:g} s "
                      f"(limit {config.alert_reconnects})", reconnects=recent)
        else:
            book.clear("ws_reconnects", f"{recent} reconnects within {config.alert_window_seconds:g} s")

    def _order_failures(self, now: float) -> None:
        config = self.bot.config
        orders = self._orders
        while orders and orders[0][0] < now - config.alert_window_seconds:
            orders.popleft()
        failed = sum(1 for _, ok in orders if not ok)
        book = self.bot.registry.alerts
        if len(orders) >= config.alert_order_min_orders and failed / len(orders) > config.alert_order_failure_rate:
            book.fire("order_failures", "P2",
                      f"{failed} of the last {len(orders)} orders failed within {config.alert_window_seconds:g} s "
                      f"(limit {config.alert_order_failure_rate:.0%})", failed=failed, orders=len(orders))
        else:
            book.clear("order_failures", f"{failed} of {len(orders)} orders failed within the window")

    def _memory_growth(self, now: float) -> None:
        config = self.bot.config
        window = config.alert_memory_window_seconds
        samples = self._memory
        if not samples or now - samples[-1][0] >= window / MEMORY_SAMPLES:
            rss = self.rss()
            if rss is None:
                return
            if not samples:  # an alert left active by an earlier process was about that process's memory
                self.bot.registry.alerts.clear("memory_growth", "a new process: its memory watched from now")
            samples.append((now, rss))
        while len(samples) > 1 and samples[1][0] <= now - window:
            samples.popleft()
        first_t, first = samples[0]
        last_t, last = samples[-1]
        if last_t - first_t < window * 0.99:
            return  # not watched for a whole window yet
        mid_t, mid = min(samples, key=lambda s: abs(s[0] - (first_t + last_t) / 2))
        limit = config.alert_memory_growth_mb_per_hour

        def rate(t0: float, v0: int, t1: float, v1: int) -> float:
            return (v1 - v0) / MB / ((t1 - t0) / 3600) if t1 > t0 else 0.0

        overall = rate(first_t, first, last_t, last)
        book = self.bot.registry.alerts
        if overall > limit and rate(first_t, first, mid_t, mid) > limit and rate(mid_t, mid, last_t, last) > limit:
            book.fire("memory_growth", "P2",
                      f"resident memory grew {overall:.1f} MB/h over {window / 3600:g} h "
                      f"(limit {limit:g} MB/h; now {last / MB:.0f} MB)", mb_per_hour=round(overall, 2))
        elif overall <= limit:
            book.clear("memory_growth", f"{overall:.1f} MB/h over the window")


class AlertWebhook:
    """Posts alert events to ``alert_webhook_url`` in the background, in order."""

    def __init__(self, bot: PerpsBot) -> None:
        self.bot = bot
        self.queue: asyncio.Queue[str] = asyncio.Queue(WEBHOOK_QUEUE)
        self.sent = 0
        self.failed = 0

    def on_event(self, kind: str, symbol: str | None, data: dict[str, Any]) -> None:
        if kind not in ("alert", "alert_cleared") or self.bot.config.alert_webhook_url is None:
            return
        if kind == "alert":
            text = f"perpsbot {data.get('severity')} alert {data.get('rule')}: {data.get('message')}"
        else:
            text = f"perpsbot {data.get('severity')} resolved {data.get('rule')}: {data.get('message') or 'cleared'}"
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._failure("queue full: alert not sent")

    async def run(self) -> None:
        import aiohttp  # here, not at import: only a bot with a webhook needs the HTTP client

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)) as session:
            while True:
                text = await self.queue.get()
                try:
                    await self._post(session, text)
                finally:
                    self.queue.task_done()

    async def drain(self) -> None:
        """Give queued messages a moment to go out (at shutdown)."""
        if not self.queue.empty():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), WEBHOOK_DRAIN_SECONDS)

    async def _post(self, session: aiohttp.ClientSession, text: str) -> None:
        import aiohttp

        url = self.bot.config.alert_webhook_url
        if url is None:
            return
        try:
            async with session.post(url.get_secret_value(), json={"text": text}) as response:
                if response.status >= 300:
                    self._failure(f"HTTP {response.status}")
                    return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # the URL is a secret: the error names only what went wrong, never where
            self._failure(type(exc).__name__ if not isinstance(exc, OSError) or not exc.strerror
                          else f"{type(exc).__name__}: {exc.strerror}")
            return
        self.sent += 1

    def _failure(self, error: str) -> None:
        self.failed += 1
        log.warning("alert webhook failed: %s", error)
        self.bot.registry.events.append(self.bot.clock.now(), "alert_webhook_failed", None, error=error)
