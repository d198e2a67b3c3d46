"""Chaos: the bot trading on Coinbase's protocol against the simulator server with every
fault on (WS drops and sequence gaps, 429 bursts, 5xx, orders accepted with the answer
lost, slow answers), SIGKILLed at 20+ seeded random points (start-up / recovery, mid
trading, right after an order reached the venue) and restarted. After each kill: every
order at the exchange is in our write-ahead store, no id twice. Every few kills and at
the end, a clean restart that only recovers and reconciles, then: no PENDING left, open
orders equal the exchange's, every exchange fill of ours recorded once (same size), the
position from our fills equals the exchange's, the last reconciliation matched.
The rounds live in ``harness.py``, shared with ``scripts/chaos_run.py``."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import ChaosRun, format_figures

KILLS = 20
VERIFY_EVERY = 5


async def test_sigkill_and_restart_lose_nothing_and_duplicate_nothing(tmp_path: Path):
    async with ChaosRun(tmp_path, seed=21) as run:
        for kill in range(1, KILLS + 1):
            await run.kill_round()
            assert not run.stats.violations, run.stats.violations
            if kill % VERIFY_EVERY == 0:
                await run.verify()
                assert not run.stats.violations, run.stats.violations
        fig = run.figures()
        print(format_figures(fig))
        assert fig["kills"] >= 20 and fig["verifications"] >= 4
        assert fig["orders"] > KILLS // 2 and fig["venue_fills"] > 0, fig  # the bot really traded
        for kind in ("lost_response", "server_error", "rate_limit", "slow", "ws_disconnect", "skip_sequence"):
            assert fig["injected"].get(kind, 0) > 0, f"{kind} never fired: {fig['injected']}"
