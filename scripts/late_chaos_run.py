#!/usr/bin/env python
"""Late-acceptance chaos run (issue 21's acceptance): the real CLI bot on three
perpetuals against the simulator server with ``--late`` of order requests processed
``--delay`` seconds after their body arrived (past the bot's ``--timeout``), plus the
other order-path faults. With ``--kills 0``: one trading run of ``--trade-seconds``;
otherwise that many SIGKILLs at seeded random points (start-up, mid run, right after
an order's write-ahead record, right after the venue took an order), each followed by
a restart. A clean run that does not trade every ``--verify-every`` kills and at the
end, then the checks of ``tests/chaos/cli_harness.py``.

    .venv/bin/python scripts/late_chaos_run.py --kills 0
    .venv/bin/python scripts/late_chaos_run.py --kills 40

Prints the figures (max position / intended size per symbol at reconciliations and
sampled, orders rejected that filled, duplicates, kills, faults injected); exits 1 if
there was any violation (listed on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.cli_harness import CliChaosRun, format_cli_figures, late_faults  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=40, help="SIGKILLs (default 40; 0: one trading run, no kill)")
    p.add_argument("--late", type=float, default=0.3, help="share of order requests processed late (default 0.3)")
    p.add_argument("--delay", type=float, default=12.0, help="seconds after their body arrived (default 12)")
    p.add_argument("--timeout", type=float, default=10.0, help="the bot's order_timeout_seconds (default 10)")
    p.add_argument("--trade-seconds", type=float, default=180.0, help="the trading run with --kills 0 (default 180)")
    p.add_argument("--verify-every", type=int, default=10, help="a clean run + the checks every N kills")
    p.add_argument("--seed", type=int, default=21, help="seed for the server, its faults and the kill points")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.kills < 0 or not 0 < args.late <= 1 or args.delay <= 0 or args.timeout <= 0 or args.verify_every < 1:
        p.error("--kills >= 0, 0 < --late <= 1, --delay > 0, --timeout > 0 and --verify-every >= 1")
    return args


async def run(args: argparse.Namespace, work_dir: Path) -> int:
    async with CliChaosRun(work_dir, seed=args.seed, faults=late_faults(args.late, args.delay),
                           order_timeout=args.timeout, late_delay=args.delay) as chaos:
        if args.kills == 0:
            await chaos.trade(args.trade_seconds)
        for kill in range(1, args.kills + 1):
            await chaos.kill_round()
            if kill % args.verify_every == 0 and kill < args.kills:
                await chaos.verify()
                print(format_cli_figures(chaos.figures()), file=sys.stderr, flush=True)
        await chaos.verify()
        print(format_cli_figures(chaos.figures()), flush=True)
        for violation in chaos.stats.violations:
            print(f"VIOLATION {violation}", file=sys.stderr)
        return 1 if chaos.stats.violations else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        return asyncio.run(run(args, Path(args.keep)))
    with tempfile.TemporaryDirectory(prefix="late-chaos-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
