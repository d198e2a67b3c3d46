from perpsbot.store.events import Event, EventStore, Run
from perpsbot.store.orders import OrdersStore
from perpsbot.store.sqlite import StoreError

__all__ = ["Event", "EventStore", "OrdersStore", "Run", "StoreError"]
