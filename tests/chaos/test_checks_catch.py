"""A test of the test: each check of the CLI chaos harness fails on a build broken on
purpose. No flag in the product: the bot process gets a ``sitecustomize.py`` on its
``PYTHONPATH`` that monkeypatches the fault in. Plus the check functions on crafted rows."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.chaos.checks import (
    Exposure,
    VenueFill,
    closed_but_filled,
    duplicate_openings,
    exposure_violations,
    intended_bound,
)
from tests.chaos.cli_harness import CliChaosRun, late_faults

# ----- the check functions on crafted rows ----------------------------------------------------


def test_the_bound_is_one_entry_at_the_highest_equity_and_lowest_mark():
    assert intended_bound(D("0.01"), D(2), D(100_000), D(100), tolerance=D(0)) == D(20)
    assert intended_bound(D("0.01"), D(2), D(100_000), D(100)) == D("20.4")
    # in contracts: 2,000 USD at 90,000 is 2.22 contracts of 0.01 BTC
    assert intended_bound(D("0.01"), D(2), D(100_000), D(90_000), tolerance=D(0),
                          contract_size=D("0.01")) == D(2_000) / D(900)


def test_exposure_over_the_bound_is_reported_once_per_symbol_and_source():
    bounds = {"BIP-20DEC30-CDE": D("2.04"), "ETP-20DEC30-CDE": D("68")}
    readings = [
        Exposure("reconciliation 3", "BIP-20DEC30-CDE", D(2)),
        Exposure("reconciliation 9", "BIP-20DEC30-CDE", D(-4)),
        Exposure("reconciliation 12", "BIP-20DEC30-CDE", D(3)),
        Exposure("venue sample", "ETP-20DEC30-CDE", D(68)),  # at the bound: fine
    ]
    problems = exposure_violations(readings, bounds)
    assert len(problems) == 1 and "BIP-20DEC30-CDE position -4 at reconciliation 9" in problems[0]
    assert "2.00x" in problems[0]
    assert exposure_violations([Exposure("venue sample", "ETP-20DEC30-CDE", D(130))], bounds)


def test_an_order_we_closed_that_filled_is_reported():
    stored = {"a": "REJECTED", "b": "CANCELLED", "c": "CANCELLED", "d": "FILLED", "e": "REJECTED"}
    venue = {"a": ("FILLED", D(1)), "b": ("FILLED", D(1)), "c": ("CANCELLED", D("0.5")),  # c: an IOC remainder
             "d": ("FILLED", D(1)), "e": ("FAILED", D(0))}
    problems = closed_but_filled(stored, venue)
    assert [p.split()[3] for p in problems] == ["a", "b"]


def test_two_openings_without_a_close_between_are_a_duplicate():
    buy1, buy2 = VenueFill("S", "BUY", "o1", False), VenueFill("S", "BUY", "o2", False)
    close = VenueFill("S", "SELL", "c1", True)
    assert duplicate_openings([buy1, buy1, close, buy2]) == []  # two fills of one order, then a close
    assert duplicate_openings([buy1, VenueFill("S", "SELL", "s1", False), buy2]) == []  # spot: a sell closes
    assert duplicate_openings([buy1, VenueFill("T", "BUY", "t1", False)]) == []  # another symbol
    assert len(duplicate_openings([buy1, buy2])) == 1
    assert len(duplicate_openings([buy1], live=[buy2])) == 1  # the second still working at the venue


# ----- broken builds --------------------------------------------------------------------------

# Without the re-opening of a closed order that fills after all (the fill is only alerted on),
# as before the late-acceptance fix: what the two broken builds below close stays closed.
NO_REOPEN = '''
from perpsbot.execution.coordinator import ExecutionCoordinator

ExecutionCoordinator.reopen = lambda self, order, why: None
'''

# One not-found taken as proof of absence: PENDING orders are rejected at the next reconciliation.
ABSENCE_ASSUMED = NO_REOPEN + '''
from perpsbot.domain import OrderStatus
from perpsbot.exchange.port import OrderNotFound
from perpsbot.execution.coordinator import ExecutionCoordinator

_resolve = ExecutionCoordinator.resolve_intents


async def resolve_intents(self, *, this_run_pending=False):
    for order in self.orders.orders(open_only=True):
        if order.status is OrderStatus.PENDING:
            try:
                await self.exchange.get_order(order.client_order_id)
            except OrderNotFound:
                order.reject_reason = "broken build: one not-found taken as absence"
                order.advance_to(OrderStatus.REJECTED, self.clock.now())
                self.orders.upsert(order)
    return await _resolve(self, this_run_pending=this_run_pending)


ExecutionCoordinator.resolve_intents = resolve_intents
'''

# An order of unknown fate given up and the decision sent again at once.
RESEND_UNKNOWN = NO_REOPEN + '''
from perpsbot.domain import OrderStatus
from perpsbot.execution.coordinator import ExecutionCoordinator

_execute = ExecutionCoordinator._execute


async def _execute_twice(self, decision):
    results = await _execute(self, decision)
    if results and results[-1].outcome == "failed" and results[-1].order is not None:
        order = results[-1].order
        order.reject_reason = "broken build: sent again after an unknown fate"
        order.advance_to(OrderStatus.REJECTED, self.clock.now())
        self.orders.upsert(order)
        results += await _execute(self, decision)
    return results


ExecutionCoordinator._execute = _execute_twice
'''

# No write-ahead record: an order is in orders.db only once its answer came.
NO_WRITE_AHEAD = '''
from perpsbot.store.orders import OrdersStore

OrdersStore.write_ahead = lambda self, order: None
'''


@pytest.mark.parametrize("name, patch, expected", [
    ("absence_assumed", ABSENCE_ASSUMED, ["closed but filled", "rejected as not found but at the venue"]),
    ("resend_unknown", RESEND_UNKNOWN, ["exposure", "duplicate", "closed but filled"]),
    ("no_write_ahead", NO_WRITE_AHEAD, ["venue orders not in orders.db"]),
])
async def test_each_check_fails_on_a_build_broken_on_purpose(tmp_path: Path, name: str, patch: str,
                                                            expected: list[str]):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(patch, encoding="utf-8")
    # every order late: the broken path is taken on the first entry
    async with CliChaosRun(tmp_path / "run", seed=3, faults=late_faults(1.0, 2.5), order_timeout=1.5,
                           late_delay=2.5, env={"PYTHONPATH": str(broken)}) as run:
        await run.trade(12)
        problems = run.stats.violations + run.check_all()
    assert run.figures()["orders"] > 0, f"{name}: the bot placed no order"
    for what in expected:
        assert any(what in p for p in problems), f"{name}: no '{what}' violation in {problems}"
