"""``CoinbasePushFeed``: the user channels' events as the port's pushed updates, and the
frames it refuses (with a code) instead of passing on or raising into the connection."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from perpsbot.domain import OrderStatus, Side
from perpsbot.exchange.coinbase.mapping import FuturesBalanceEvent, OrderUpdate, SubscriptionsEvent
from perpsbot.exchange.coinbase.push import CoinbasePushFeed
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket, StreamNotice
from perpsbot.exchange.port import PushedAccount, PushedOrder, PushRejected, PushState

TS = datetime(2026, 12, 4, 12, tzinfo=UTC)
D = Decimal


class FakeExchange:
    def __init__(self) -> None:
        self.remembered: dict[str, str] = {}

    def user_stream(self, **options) -> CoinbaseWebSocket:
        return CoinbaseWebSocket("wss://127.0.0.1:1", None, **options)

    def is_cfm(self, symbol: str) -> bool:
        return symbol.endswith("-CDE")

    def client_id_known(self, order_id: str) -> str:
        return {"known-oid": "pb-known"}.get(order_id, "")

    def remember_order(self, client_order_id: str, order_id: str) -> None:
        self.remembered[client_order_id] = order_id

    def equity_with_futures(self, total: Decimal) -> Decimal:
        return total + 5


def feed(updates: list, on_update=None) -> CoinbasePushFeed:
    return CoinbasePushFeed(FakeExchange(), ["BIP-20DEC30-CDE", "BTC-USD"], on_update or updates.append, 5.0)


def order_update(order_id: str = "oid-1", client_id: str = "pb-1", filled: str = "0.5") -> OrderUpdate:
    return OrderUpdate(order_id, client_id, "BTC-USD", Side.BUY, OrderStatus.PARTIALLY_FILLED, "OPEN", D(filled),
                       D("0.5"), D(100), D("0.1"), TS)


BALANCE = {"futures_buying_power": D(900), "initial_margin": D(50), "liquidation_threshold": D(25),
           "liquidation_buffer_amount": D(975), "total_usd_balance": D(1000)}


def test_orders_and_balances_become_pushed_updates():
    updates: list = []
    pushed = feed(updates)
    assert pushed.futures  # a CFM symbol: futures_balance_summary is subscribed too
    pushed._on_event(order_update())
    pushed._on_event(order_update("known-oid", ""))  # the client id from the ids the adapter saw
    pushed._on_event(order_update("someone-elses", ""))  # not ours: dropped
    pushed._on_event(FuturesBalanceEvent(dict(BALANCE), TS))
    assert updates == [
        PushedOrder("pb-1", "BTC-USD", OrderStatus.PARTIALLY_FILLED, D("0.5"), TS),
        PushedOrder("pb-known", "BTC-USD", OrderStatus.PARTIALLY_FILLED, D("0.5"), TS),
        PushedAccount(equity=D(1005), buying_power=D(900), initial_margin=D(50), maintenance_margin=D(25),
                      liquidation_buffer=D(975), ts=TS),
    ]
    assert pushed.exchange.remembered["pb-1"] == "oid-1"


def test_the_feed_is_up_once_the_user_subscription_is_confirmed_and_down_on_a_drop_or_gap():
    updates: list = []
    pushed = feed(updates)
    pushed._on_event(StreamNotice("connected", "wss://x", TS))
    pushed._on_event(SubscriptionsEvent({"heartbeats": ()}, TS))
    assert updates == []  # connected, but not subscribed to user yet
    pushed._on_event(SubscriptionsEvent({"heartbeats": (), "user": ("BTC-USD",)}, TS))
    pushed._on_event(StreamNotice("gap", "sequence_num 9, expected 8", TS))
    pushed._on_event(StreamNotice("disconnected", "closed", TS))  # already down: said once
    assert [(u.up, u.detail) for u in updates if isinstance(u, PushState)] == [
        (True, "subscribed"), (False, "gap: sequence_num 9, expected 8")]


def test_frames_that_cannot_be_read_are_refused_with_a_code():
    updates: list = []
    pushed = feed(updates)
    pushed._on_event(StreamNotice("rejected", "not JSON", TS))
    pushed._on_event(StreamNotice("rejected", "message.events[0].orders[0].status: unknown order status 'X'", TS))
    pushed._on_event(order_update(filled="-1"))
    short = dict(BALANCE)
    del short["initial_margin"]
    pushed._on_event(FuturesBalanceEvent(short, TS))
    assert [(u.code, u.reason) for u in updates] == [
        ("not_json", "not JSON"),
        ("bad_field", "message.events[0].orders[0].status: unknown order status 'X'"),
        ("bad_field", "user: order oid-1: negative cumulative_quantity"),
        ("missing_field", "futures_balance_summary: no initial_margin"),
    ]
    assert all(isinstance(u, PushRejected) for u in updates)


def test_a_failing_consumer_never_raises_into_the_connection():
    seen: list = []

    def on_update(update):
        seen.append(update)
        raise RuntimeError("consumer bug")  # on the order, and again on the rejection that reports it

    pushed = feed([], on_update)
    pushed._on_event(order_update())  # must not raise
    assert [type(u) for u in seen] == [PushedOrder, PushRejected]
    assert seen[1].code == "handler_error" and "consumer bug" in seen[1].reason
