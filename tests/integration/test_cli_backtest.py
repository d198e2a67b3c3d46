"""``perpsbot backtest`` and ``perpsbot data download`` end to end, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backtest.candle_server import T0, serving
from tests.integration.test_cli_basics import perpsbot


def one_line_error(result, expected: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_a_synthetic_backtest_writes_its_report(tmp_path: Path):
    out = tmp_path / "out"
    result = perpsbot("backtest", "--synthetic", "5000", "--out", str(out), "--param", "trailing_stop_pct=0",
                      "--fee-bps", "10", "--events", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backtest BTC-USD: 5,000 1m candles, fee 10 bps, slippage 1 bps" in result.stdout
    assert "next candle's open" in result.stdout and "candles/s" in result.stdout
    for name in ("report.json", "trades.csv", "equity.png", "report.html", "events.jsonl"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["candles"] == 5000 and report["costs"]["fee_bps"] == "10"
    assert report["strategy"]["params"]["trailing_stop_pct"] == "0" and report["metrics"]["trades"] > 10
    kinds = {json.loads(line)["kind"] for line in (out / "events.jsonl").read_text().splitlines()}
    assert {"bot_started", "decision", "risk_approved", "order_submitted", "order_placed", "fill"} <= kinds
    # Another process (another hash seed), the same command: the same bytes.
    again = perpsbot("backtest", "--synthetic", "5000", "--out", str(tmp_path / "again"), "--param",
                     "trailing_stop_pct=0", "--fee-bps", "10", cwd=tmp_path, env={"PYTHONHASHSEED": "123"})
    assert again.returncode == 0, again.stderr
    for name in ("report.json", "trades.csv", "equity.png", "report.html"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_a_csv_with_gaps_is_repaired_and_says_so(tmp_path: Path):
    lines = ["timestamp,open,high,low,close,volume"]
    price = 100.0
    for i in range(400):
        if 100 <= i < 103:
            continue  # three minutes without trades
        price += (-1) ** (i // 37) * 0.25
        lines.append(f"{T0 + 60 * i},{price},{price + 0.5},{price - 0.5},{price},1")
    data = tmp_path / "btc.csv"
    data.write_text("\n".join(lines) + "\n")
    result = perpsbot("backtest", "--data", str(data), "--out", str(tmp_path / "o"), "--param", "short_window=5",
                      "--param", "long_window=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data repaired: filled 1 gap (3 missing candles)" in result.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["data"]["candles"] == 400 and report["data"]["repairs"][0].startswith("filled 1 gap")
    strict = perpsbot("backtest", "--data", str(data), "--strict", "--out", str(tmp_path / "s"), cwd=tmp_path)
    one_line_error(strict, "1 gap in the data")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "give either --data FILE or --synthetic N"),
        (("--synthetic", "10", "--data", "x.csv"), "give either --data FILE or --synthetic N"),
        (("--synthetic", "many"), "--synthetic expects a number of candles, got 'many'"),
        (("--synthetic", "1"), "--synthetic needs at least 2 candles, got 1"),
        (("--synthetic", "100000000000000"), "--synthetic takes at most 10,000,000 candles, got 100,000,000,000,000"),
        (("--synthetic", "100", "--fee-bps", "abc"), "--fee-bps expects a number, got 'abc'"),
        (("--synthetic", "100", "--slippage-bps", "-1"), "--slippage-bps must be at least 0, got -1"),
        (("--synthetic", "100", "--timeframe", "7x"), "--timeframe: timeframe '7x' is not one of 1m"),
        (("--synthetic", "100", "--param", "short_window"), "--param expects KEY=VALUE, got 'short_window'"),
        (("--synthetic", "100", "--param", "short_window=abc"), "short_window = 'abc' (--param short_window)"),
        (("--synthetic", "100", "--param", "long_window=3"), "short_window (5) must be smaller than long_window (3)"),
        (("--synthetic", "100", "--param", "nope=1"), "--param nope: unknown setting"),
        (("--synthetic", "100", "--param", "symbols=ETH-USD"), "--param symbols: a backtest sets this itself"),
        (("--synthetic", "100", "--funding", "0.0001"), "--funding applies to perpetuals; BTC-USD is spot"),
        (("--synthetic", "100", "--seed", "x"), "--seed expects a whole number, got 'x'"),
        (("--data", "missing.csv"), "missing.csv: no such file"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys, args, expected):
    # In-process (the same main() the command runs) to keep the suite quick; the
    # subprocess tests around here check the real command line.
    from perpsbot.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["perpsbot", "backtest", *args, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    one_line_error(Outcome(info.value.code, captured.out, captured.err), expected)
    assert not (tmp_path / "o").exists()


@dataclass
class Outcome:
    returncode: int | str | None
    stdout: str
    stderr: str


def test_a_bad_file_is_one_line_naming_the_row(tmp_path: Path):
    data = tmp_path / "bad.csv"
    data.write_text("date,open,high,low,close,volume\n2026-01-01T00:00:00Z,1,2,1,1,1\n"
                    "2026-01-01T00:01:00Z,1,2,1,NaN,1\n")
    one_line_error(perpsbot("backtest", "--data", str(data), cwd=tmp_path), "bad.csv line 3: close is NaN")


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")} | {"COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perpsbot", *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_data_download_then_backtest_the_file(tmp_path: Path):
    async with serving(1000) as server:
        server.buckets.discard(T0 + 60 * 500)
        args = ("data", "download", "BTC-USD", "--start", "2026-01-01", "--end", "2026-01-01T10:00:00Z",
                "--base-url", server.url, "--rate", "1000", "--out", str(tmp_path / "btc.csv"))
        code, out, err = await run_cli(*args, cwd=tmp_path)
        assert code == 0, err
        assert "599 candles written to" in out and "in 2 requests" in out
        assert "1 gap, 1 candles missing" in err and "2026-01-01T08:20:00Z (1 candle)" in err
        code, out, err = await run_cli(*args, cwd=tmp_path)  # nothing new
        assert code == 0 and "already holds every closed candle" in out
        code, out, err = await run_cli(*args[:5], "--end", "2026-01-01T16:00:00Z", *args[7:], cwd=tmp_path)
        assert code == 0 and "resumed after the last candle" in out and "360 candles written" in out
        code, out, err = await run_cli("data", "download", "BTC-USD", "--start", "yesterday", cwd=tmp_path)
        assert code == 2 and err.strip().count("\n") == 0 and "--start 'yesterday' is neither" in err
    code, out, err = await run_cli("backtest", "--data", str(tmp_path / "btc.csv"), "--param", "short_window=5",
                                   "--param", "long_window=30", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert code == 0, err
    assert "data repaired: filled 1 gap (1 missing candle)" in err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["data"]["candles"] == 960


def test_a_backtest_from_the_parse_cache_reports_the_same_and_a_damaged_cache_is_a_warning(
    tmp_path: Path, monkeypatch, capsys
):
    from perpsbot.backtest.cache import cache_path
    from perpsbot.backtest.data import synthetic_candles, write_csv
    from perpsbot.cli.main import main

    data = tmp_path / "btc.csv"
    write_csv(synthetic_candles(3000, seed=3), data)
    monkeypatch.chdir(tmp_path)

    def backtest(out: str):
        monkeypatch.setattr(sys, "argv", ["perpsbot", "backtest", "--data", str(data), "--out", out,
                                          "--param", "trailing_stop_pct=0"])
        with pytest.raises(SystemExit) as info:
            main()
        captured = capsys.readouterr()
        assert info.value.code in (0, None), captured.err
        return captured

    backtest("cold")
    assert cache_path(data).is_file()
    assert "warning" not in backtest("warm").err
    cache_path(data).write_bytes(cache_path(data).read_bytes()[:1000])
    mended = backtest("mended")
    warnings = [line for line in mended.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"the parse cache {cache_path(data)} is damaged" in warnings[0], mended.err
    for name in ("report.json", "trades.csv", "equity.png", "report.html"):
        cold = (tmp_path / "cold" / name).read_bytes()
        assert cold == (tmp_path / "warm" / name).read_bytes() == (tmp_path / "mended" / name).read_bytes(), name
