"""``evaluate(bot)``: is the bot fit to trade, and if not, why.

* ``failing`` — it cannot trade: not running yet, the kill switch is on, or no symbol
  has a fresh mark;
* ``degraded`` — it trades with a handicap: some marks stale, the market stream down
  (marks polled instead), reduce-only, or a reconciliation mismatch;
* ``ok`` — none of these.

A mark is stale past ``mark_staleness_seconds``, the risk manager's own limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perpsbot.config.model import StreamLevel
from perpsbot.execution.reconcile import LATE_FILL
from perpsbot.execution.reconcile import REASON as RECONCILIATION  # the reduce-only reason of a mismatch

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

STATUS_CODES = {"ok": 0, "degraded": 1, "failing": 2}


def evaluate(bot: PerpsBot) -> dict[str, Any]:
    reg = bot.registry
    failing: list[str] = []
    degraded: list[str] = []
    if not bot.started:
        failing.append("not running: starting or stopped")
    risk = reg.risk
    if risk.killed:
        failing.append(f"kill switch: {', '.join(risk.kill_reasons)}")
    md = reg.market_data
    limit = reg.config.mark_staleness_seconds
    stale = []
    for symbol in md.symbols:
        age = md.mark_age(symbol)
        if age is None or age > limit:
            stale.append(f"{symbol} ({'no mark' if age is None else f'{age:.1f} s'})")
    if stale:
        (failing if len(stale) == len(md.symbols) else degraded).append(f"stale marks: {', '.join(stale)}")
    streaming = reg.streaming
    if streaming is not None and streaming.level is not StreamLevel.OFF and bot.started and not streaming.connected:
        degraded.append("market stream down: marks polled over REST")
    if risk.reduce_only_reasons:
        degraded.append(f"reduce-only: {', '.join(risk.reduce_only_reasons)}")
    unexplained = sorted(s for s, reasons in risk.symbol_reduce_only.items() if RECONCILIATION in reasons)
    if unexplained:
        degraded.append(
            f"reconciliation mismatch: {', '.join(unexplained)} reduce-only until our records match the exchange's"
        )
    late = sorted(s for s, reasons in risk.symbol_reduce_only.items() if LATE_FILL in reasons)
    if late:
        degraded.append(f"late fill of an order we had closed: {', '.join(late)} reduce-only until flat")
    status = "failing" if failing else "degraded" if degraded else "ok"
    return {"status": status, "reasons": failing + degraded}
