"""Never twice: the real CLI bot (``python -m perpsbot run``) on three perpetuals against
the simulator server, with 30 % of order requests processed after the bot's placement
timeout (``late_accept``; the timeout shortened to 1.5 s and the delay to 2.5 s to keep
the run short) and the other order-path faults on; once without kills and once SIGKILLed
at random points and restarted. Then a clean run that does not trade, and every check
of ``cli_harness.py``: the position never above the intended size (at each
reconciliation and in the venue sampled every 50 ms), no order we closed that filled,
no decision sent twice, the write-ahead and state invariants.
``scripts/late_chaos_run.py`` is the long version (12 s late, 10 s timeout, 40 kills).

Both fail until issue 21's fix lands: an order of unknown fate is rejected as "not
found" before the venue accepts it, and fills (closed but filled); often the decision
is sent again too (a duplicate, the position twice the intended size)."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.cli_harness import CliChaosRun, format_cli_figures, late_faults

TIMEOUT = 1.5
DELAY = 2.5


async def test_late_acceptance_never_puts_an_order_twice(tmp_path: Path):
    async with CliChaosRun(tmp_path, seed=4, faults=late_faults(0.3, DELAY), order_timeout=TIMEOUT,
                           late_delay=DELAY) as run:
        await run.trade(15)
        await run.verify()
        fig = run.figures()
        print(format_cli_figures(fig))
        assert fig["injected"].get("late_accept", 0) > 0 and fig["orders"] >= 5, fig  # the fault met real orders
        assert not run.stats.violations, "\n".join(run.stats.violations)


async def test_late_acceptance_across_kills_never_puts_an_order_twice(tmp_path: Path):
    # Killed as an order's request is under way, or just after the venue took it: the
    # restart's recovery meets orders the venue will accept only later (4 s, past both
    # the timeout and a restart).
    async with CliChaosRun(tmp_path, seed=5, faults=late_faults(0.5, 4.0), order_timeout=TIMEOUT,
                           late_delay=4.0) as run:
        for point in ("after_send", "after_order", "after_send"):
            await run.kill_round(point)
        await run.verify()
        fig = run.figures()
        print(format_cli_figures(fig))
        assert fig["kills"] == 3 and fig["orders"] >= 2, fig
        assert not run.stats.violations, "\n".join(run.stats.violations)
