"""Outside the composition root the bot knows venues only through the ``Exchange`` port.

The composition root — the code that may choose an adapter and so know which one it
chose — is ``PerpsBotBuilder._default_exchange`` in src/perpsbot/bot.py and the
``perpsbot.cli`` package. Everywhere else in src/, what a venue can do is asked of
``exchange.capabilities``: no comparison of an exchange's ``name``, no ``hasattr`` /
``getattr`` on an exchange. ``market/`` reads the venue-neutral market events
(``exchange.stream``), never a venue's channel names.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "perpsbot"
ROOT_PACKAGES = (SRC / "cli",)
ROOT_FUNCTIONS = {(SRC / "bot.py", "PerpsBotBuilder._default_exchange")}
# The channels Coinbase's market-data messages carry or are subscribed by (``ticker`` is
# also the venue-neutral feed's name).
COINBASE_CHANNELS = ("l2_data", "level2", "market_trades", "ticker_batch", "heartbeats")


def _mentions_exchange(node: ast.AST) -> bool:
    return "exchange" in ast.unparse(node).lower()


def _venue_probes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, source) of each exchange-name comparison and hasattr/getattr on an exchange."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "name" and _mentions_exchange(s.value) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            if node.args and _mentions_exchange(node.args[0]):
                found.append((node.lineno, ast.unparse(node)))
    return found


def _root_lines(path: Path, tree: ast.Module) -> set[int]:
    """The lines of ``path`` that belong to the composition root."""
    lines: set[int] = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            if (path, f"{cls.name}.{fn.name}") in ROOT_FUNCTIONS:
                lines.update(range(fn.lineno, (fn.end_lineno or fn.lineno) + 1))
    return lines


def _outside_root(source: str, path: Path) -> list[str]:
    tree = ast.parse(source)
    root = _root_lines(path, tree)
    return [f"{path.relative_to(SRC.parent)}:{line}: {text}" for line, text in _venue_probes(tree) if line not in root]


def test_nothing_outside_the_composition_root_probes_the_exchange_by_name_or_attribute():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if any(path.is_relative_to(package) for package in ROOT_PACKAGES):
            continue
        found += _outside_root(path.read_text(), path)
    assert found == []


def test_the_probe_finds_each_kind_it_forbids():
    """The scan itself: each forbidden shape is found outside the root and allowed inside."""
    planted = (
        "class PerpsBotBuilder:\n"
        "    def _default_exchange(self, exchange):\n"
        "        return exchange.name == 'sim'\n"
        "    def build(self, exchange):\n"
        "        persists = exchange.name != 'sim'\n"
        "        stream = getattr(exchange, 'market_stream', None)\n"
        "        return persists, stream, hasattr(self._exchange, 'book_source')\n"
    )
    found = _outside_root(planted, SRC / "bot.py")
    assert [line.split(": ", 1)[1] for line in found] == [
        "exchange.name != 'sim'", "getattr(exchange, 'market_stream', None)", "hasattr(self._exchange, 'book_source')",
    ]


def test_market_names_no_coinbase_channel():
    found = [
        f"{path.relative_to(SRC.parent)}:{n}: {channel}"
        for path in sorted((SRC / "market").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for channel in COINBASE_CHANNELS
        if channel in line
    ]
    assert found == []


def test_one_ticker_and_one_market_trade_type():
    defined: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name in ("Ticker", "MarketTrade"):
                defined.setdefault(node.name, []).append(str(path.relative_to(SRC.parent)))
    assert defined == {"Ticker": ["perpsbot/exchange/stream.py"], "MarketTrade": ["perpsbot/exchange/stream.py"]}
