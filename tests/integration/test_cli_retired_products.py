"""Coinbase's INTX perpetuals closed on 2026-10-01: naming one is refused in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.test_cli_basics import perpsbot

SRC = Path(__file__).resolve().parents[2] / "src" / "perpsbot"
MIGRATION_MODULE = SRC / "config" / "retired.py"
CLOSED = ("Coinbase's INTX perpetuals closed on 2026-10-01 and are no longer traded through the "
          "Advanced Trade API")


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(("symbol", "instead"), [
    ("BTC-PERP-INTX", "use the US perpetual-style future BIP-20DEC30-CDE instead"),
    ("eth-perp-intx", "use the US perpetual-style future ETP-20DEC30-CDE instead"),
    ("SOL-PERP-INTX", "no US perpetual-style future on SOL is listed (spot SOL-USD still trades)"),
])
def test_run_with_an_intx_symbol_says_the_venue_closed_and_what_to_use(tmp_path: Path, symbol: str, instead: str):
    line = _one_error_line(perpsbot("run", "--symbols", f"BTC-USD,{symbol}", "--duration", "1", cwd=tmp_path))
    assert CLOSED in line and instead in line and symbol.upper() in line
    assert not (tmp_path / "data").exists()  # refused before a store is opened


def test_a_config_file_naming_an_intx_product_is_refused_the_same_way(tmp_path: Path):
    (tmp_path / "bot.toml").write_text('symbols = ["ETH-PERP-INTX"]\n')
    line = _one_error_line(perpsbot("run", "--config", "bot.toml", "--duration", "1", cwd=tmp_path))
    assert "(file bot.toml)" in line and CLOSED in line and "ETP-20DEC30-CDE instead" in line


def test_a_per_symbol_limit_on_an_intx_product_is_refused(tmp_path: Path):
    (tmp_path / "bot.toml").write_text('symbol_max_leverage = "BTC-PERP-INTX=2"\n')
    line = _one_error_line(perpsbot("config", "show", "--config", "bot.toml", cwd=tmp_path))
    assert "symbol_max_leverage" in line and CLOSED in line and "BIP-20DEC30-CDE instead" in line


def test_a_backtest_on_an_intx_product_is_refused(tmp_path: Path):
    line = _one_error_line(perpsbot("backtest", "--synthetic", "50", "--symbol", "BTC-PERP-INTX", cwd=tmp_path))
    assert CLOSED in line and "BIP-20DEC30-CDE instead" in line


@pytest.mark.parametrize("command", [
    ("close", "BTC-PERP-INTX"),
    ("orders", "cancel", "--all", "--symbol", "BTC-PERP-INTX"),
    ("data", "download", "BTC-PERP-INTX", "--start", "2026-01-01", "--base-url", "http://127.0.0.1:9"),
])
def test_commands_naming_an_intx_product_say_so_too(tmp_path: Path, command: tuple[str, ...]):
    line = _one_error_line(perpsbot(*command, cwd=tmp_path))  # refused before a store is looked for
    assert CLOSED in line and "BIP-20DEC30-CDE instead" in line


def test_the_default_symbols_are_a_spot_pair_and_a_us_perpetual_style_future(tmp_path: Path):
    shown = perpsbot("config", "show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if re.search(r"\bsymbols\b", line))
    assert "BTC-USD,BIP-20DEC30-CDE" in row.replace(" ", "")


def test_no_intx_left_in_src_but_the_migration_message():
    named = sorted(str(path.relative_to(SRC)) for path in SRC.rglob("*")
                   if path.is_file() and "__pycache__" not in path.parts
                   and re.search(rb"intx", path.read_bytes(), re.IGNORECASE))
    assert named == [str(MIGRATION_MODULE.relative_to(SRC))]
