#!/usr/bin/env python
"""Long chaos run: kill/restart rounds against the simulator server with faults on until
at least ``--faults-target`` injected faults have fired (the server's ``faults.injected``
counters) and at least ``--kills`` SIGKILLs were made, or ``--minutes`` ran out. Uses
the same rounds and checks as ``tests/chaos/test_kill_restart.py``
(``tests/chaos/harness.py``): write-ahead invariants after every kill, a clean restart
with the full invariants every ``--verify-every`` kills and at the end.

    .venv/bin/python scripts/chaos_run.py --faults-target 1000 --seed 7

Prints one line of figures; exits 1 if there was any violation (listed on stderr) or
the target was not reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.harness import FAULTS, ChaosRun, format_figures  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults-target", type=int, default=1000, help="stop once this many faults fired (default 1000)")
    p.add_argument("--kills", type=int, default=20, help="and at least this many SIGKILLs were made (default 20)")
    p.add_argument("--seed", type=int, default=21, help="seed for the server, its faults and the kill points")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time cap (default 30)")
    p.add_argument("--verify-every", type=int, default=5, help="a clean restart + full checks every N kills")
    p.add_argument("--faults", default=FAULTS, help=f"fault spec (default {FAULTS})")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    p.add_argument("--progress", action="store_true", help="a line per verification on stderr")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, work_dir: Path) -> int:
    deadline = time.monotonic() + args.minutes * 60
    async with ChaosRun(work_dir, seed=args.seed, faults=args.faults) as chaos:
        def done() -> bool:
            return sum(chaos.server.faults.injected.values()) >= args.faults_target and chaos.stats.kills >= args.kills

        while not done() and time.monotonic() < deadline:
            await chaos.kill_round()
            if chaos.stats.kills % args.verify_every == 0:
                await chaos.verify()
                if args.progress:
                    print(format_figures(chaos.figures()), file=sys.stderr, flush=True)
        if chaos.stats.kills % args.verify_every != 0 or not chaos.stats.verifications:
            await chaos.verify()  # the final check, after the last kill
        fig = chaos.figures()
        print(format_figures(fig), flush=True)
        for violation in chaos.stats.violations:
            print(f"VIOLATION {violation}", file=sys.stderr)
        reached = fig["faults"] >= args.faults_target and fig["kills"] >= args.kills
        if not reached:
            print(f"target not reached within {args.minutes:g} min", file=sys.stderr)
        return 0 if reached and not chaos.stats.violations else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        return asyncio.run(run(args, Path(args.keep)))
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
