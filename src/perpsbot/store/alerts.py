"""AlertBook: alerts that fire once and resolve once, recorded as events.

An alert is a named rule (``mark_stale``, ``reconciliation_mismatch``, ...) with a
severity (P1 most urgent). ``fire`` records an ``alert`` event only when the rule was
not already active; ``clear`` records ``alert_cleared`` only when it was. The active
set is kept in the event store's state, so a restart neither fires an ongoing alert
again nor forgets to resolve it. Whoever listens on the event store (metrics, the
webhook) sees every alert and resolution.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from perpsbot.domain.clock import Clock

log = logging.getLogger(__name__)

STATE_KEY = "alerts"
SEVERITIES = ("P1", "P2", "P3")


class AlertEvents(Protocol):
    def append(self, ts: Any, kind: str, symbol: str | None = None, **data: Any) -> int: ...

    def put_state(self, key: str, value: dict[str, Any], at: Any) -> None: ...

    def get_state(self, key: str) -> tuple[dict[str, Any], str] | None: ...


class AlertBook:
    def __init__(self, events: AlertEvents, clock: Clock) -> None:
        self.events = events
        self.clock = clock
        stored = events.get_state(STATE_KEY)
        self.active: dict[str, dict[str, Any]] = dict(stored[0]) if stored else {}

    def is_active(self, rule: str) -> bool:
        return rule in self.active

    def fire(self, rule: str, severity: str, message: str, symbol: str | None = None, **fields: Any) -> bool:
        """Record the alert unless it is already active; True when it fired now."""
        if rule in self.active:
            return False
        now = self.clock.now()
        self.active[rule] = {"severity": severity, "message": message, "since": now.isoformat()}
        self._save()
        self.notify(rule, severity, message, symbol, **fields)
        return True

    def notify(self, rule: str, severity: str, message: str, symbol: str | None = None, **fields: Any) -> None:
        """A one-off alert about something that happened (it has nothing to resolve)."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        log.log(logging.ERROR if severity == "P1" else logging.WARNING, "alert %s [%s]: %s", rule, severity, message)
        self.events.append(self.clock.now(), "alert", symbol, rule=rule, severity=severity, message=message, **fields)

    def clear(self, rule: str, message: str = "") -> bool:
        """Resolve the alert if it is active; True when it resolved now."""
        alert = self.active.pop(rule, None)
        if alert is None:
            return False
        self._save()
        log.info("alert %s [%s] cleared %s", rule, alert["severity"], message)
        self.events.append(
            self.clock.now(), "alert_cleared", None, rule=rule, severity=alert["severity"], message=message,
            since=alert["since"],
        )
        return True

    def _save(self) -> None:
        self.events.put_state(STATE_KEY, self.active, self.clock.now())
