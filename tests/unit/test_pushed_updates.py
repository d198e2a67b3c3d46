"""``PushedUpdates``' decision to poll: while the user stream is down, silent beyond the
quiet window or not following every symbol, and after an outage or a rejected frame until
a poll begun with the stream healthy has run; and pushed futures figures move equity."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from perpsbot.domain import AccountSnapshot
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.port import PushedAccount, PushRejected, PushState
from perpsbot.execution.pushed import PushedUpdates
from perpsbot.store.memory import MemoryEventStore

TS = datetime(2026, 12, 4, 12, tzinfo=UTC)


class Feed:
    silent: float | None = None

    def silent_for(self) -> float | None:
        return self.silent


class Coordinator:
    def __init__(self) -> None:
        self.account = AccountSnapshot(equity=Decimal(100))
        self.symbols = {"BTC-USD"}

    def followed_symbols(self) -> set[str]:
        return self.symbols


def rig() -> tuple[PushedUpdates, Feed, Coordinator, MemoryEventStore]:
    events, coordinator, feed = MemoryEventStore(), Coordinator(), Feed()
    pushed = PushedUpdates(coordinator, events, ManualClock(TS), ["BTC-USD", "BIP-20DEC30-CDE"], 5.0)  # stand-ins
    pushed.feed = feed
    return pushed, feed, coordinator, events


def full_poll(pushed: PushedUpdates) -> None:
    pushed.poll_done(pushed.poll_started())


def kinds(events: MemoryEventStore) -> list[tuple[str, dict]]:
    return [(e.kind, e.data) for e in events.query() if e.kind.startswith("push_")]


def test_the_cycle_polls_until_a_poll_begun_with_the_stream_healthy_has_run():
    pushed, feed, _, events = rig()
    assert pushed.needs_poll()  # not up yet
    full_poll(pushed)  # begun while down: it proves nothing
    feed.silent = 0.1
    pushed.on_update(PushState(True, "subscribed", TS))
    assert pushed.healthy and pushed.needs_poll()
    full_poll(pushed)
    assert not pushed.needs_poll()
    assert kinds(events) == [("push_recovered", {})]


def test_silence_beyond_the_quiet_window_an_outage_and_a_rejected_frame_bring_polling_back():
    pushed, feed, coordinator, events = rig()
    feed.silent = 0.1
    pushed.on_update(PushState(True, "subscribed", TS))
    full_poll(pushed)
    assert not pushed.needs_poll()
    feed.silent = 6.0
    assert pushed.needs_poll()  # silent: polled, but nothing was lost while the connection held
    feed.silent = 0.1
    assert not pushed.needs_poll()
    pushed.on_update(PushState(False, "disconnected: closed", TS))
    pushed.on_update(PushState(True, "subscribed", TS))
    assert pushed.needs_poll()  # what the outage hid is polled once
    full_poll(pushed)
    assert not pushed.needs_poll()
    pushed.on_update(PushRejected("bad_field", "user: order x: negative cumulative_quantity", TS))
    pushed.on_update(PushRejected("bad_field", "another", TS))
    assert pushed.needs_poll() and pushed.rejected == {"bad_field": 2}
    full_poll(pushed)
    assert not pushed.needs_poll()
    coordinator.symbols = {"BTC-USD", "ETH-USD"}  # a symbol added while running is not subscribed
    assert pushed.needs_poll()
    assert [k for k, _ in kinds(events)] == [
        "push_recovered", "push_fallback", "push_recovered", "push_fallback", "push_recovered", "push_rejected",
        "push_fallback", "push_recovered", "push_fallback"]
    assert [d["reason"] for k, d in kinds(events) if k == "push_fallback"] == [
        "quiet", "catching up", "catching up", "symbol not subscribed"]
    assert [d["reason"] for k, d in kinds(events) if k == "push_rejected"] == [
        "user: order x: negative cumulative_quantity"]  # one event per code; the counter has both


def test_pushed_futures_figures_replace_equity_and_keep_the_margin():
    pushed, _, coordinator, _ = rig()
    figures = dict(buying_power=Decimal(80), initial_margin=Decimal(20), maintenance_margin=Decimal(10),
                   liquidation_buffer=Decimal(95), ts=TS)
    pushed.on_update(PushedAccount(equity=Decimal(105), **figures))
    assert coordinator.account.equity == 105 and pushed.margin.buying_power == 80
    pushed.on_update(PushedAccount(equity=None, **figures))  # no CFM listing: not the futures account's to decide
    assert coordinator.account.equity == 105 and pushed.account_updates["push"] == 2
