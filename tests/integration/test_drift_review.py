"""``perpsbot drift-review``: two real simulator runs, the second with added order
latency, and a report that flags exactly that row."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from perpsbot.config import BotConfig
from perpsbot.review.drift import STATUS_SHOWN
from perpsbot.store import EventStore, OrdersStore
from tests.integration.test_cli_basics import perpsbot

# Slow cycles absorb the added latency (the loop sleeps out the rest of the interval), so
# only the latency itself moves; at most two orders a minute keeps the runs alike.
RUN = ["run", "--duration", "6", "--seed", "3", "--interval", "0.5", "--set", "bar_seconds=1",
       "--set", "short_window=2", "--set", "long_window=4", "--set", "max_orders_per_minute=2"]
PNG = b"\x89PNG\r\n\x1a\n"
STATUSES = set(STATUS_SHOWN.values())


def table_rows(report: str) -> dict[str, list[str]]:
    """Signal -> cells, for every metric table row of the report."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[4] in STATUSES:
            rows.setdefault(cells[0], cells)
    return rows


def test_an_injected_order_latency_is_the_one_row_flagged(tmp_path: Path):
    for latency in ("0", "100"):
        result = perpsbot(*RUN, "--set", f"sim_order_latency_ms={latency}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    metrics = {run: json.loads(data) for run, data in db.execute(
        "SELECT run_id, data FROM events WHERE kind = 'run_metrics' ORDER BY run_id")}
    placed = dict(db.execute("SELECT run_id, COUNT(*) FROM events WHERE kind = 'order_placed' GROUP BY run_id"))
    db.close()
    assert placed.get(1) and placed.get(2), f"both runs must place an order to compare latency: {placed}"
    assert metrics[2]["order_latency_p99_ms"] >= 100  # the simulator's delay is in the measured latency
    assert metrics[1]["stream_heartbeat_lag_p95_ms"] is None  # polled simulator: no stream, no figure

    result = perpsbot("drift-review", "--baseline", "1", "--current", "2", "--out", "review/drift.md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 row(s) flagged: Order latency (p99)" in result.stdout, result.stdout
    report = (tmp_path / "review" / "drift.md").read_text()
    rows = table_rows(report)
    flagged = sorted(label for label, cells in rows.items() if cells[4] in ("⚠️ Degraded", "🚨 Over alert threshold"))
    assert flagged == ["Order latency (p99)"], report
    latency = rows["Order latency (p99)"]
    assert latency[1].endswith(" ms") and latency[2].endswith(" ms") and latency[3].startswith("+")
    assert rows["Mark update frequency"][4] == "✅ Stable"
    assert rows["Streaming heartbeat lag (p95)"][4] == "⬜ No data"
    # the seed's sections, in its order
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    assert headings[:7] == ["1. Deployment Context", "2. Drift Detection Summary", "3. Performance Baseline Comparison",
                            "4. Feature Flag Verification", "5. Telemetry & Observability", "6. Integration Points",
                            "7. Incident Review"]
    assert "  - sim_order_latency_ms: 0.0 -> 100.0" in report  # the config audit shows the change
    charts = re.findall(r"\[png\]\(([^)]+)\)", report)
    assert "drift-charts/order_latency_p99_ms.png" in charts
    for chart in charts:
        assert (tmp_path / "review" / chart).read_bytes().startswith(PNG)
    assert "**Review Status**: ⚠️ **1 row(s) flagged**: Order latency (p99)" in report

    # the same run against itself: nothing moves
    same = perpsbot("drift-review", "--baseline", "1", "--current", "1", cwd=tmp_path)
    assert same.returncode == 2 and "pick two runs" in same.stderr


def seed_store(tmp_path: Path) -> Path:
    """Two recorded runs without running the bot: metrics, an alert and an error."""
    events = EventStore(tmp_path / "data" / "paper" / "events.db")
    OrdersStore(tmp_path / "data" / "paper" / "orders.db").close()  # a 0-byte one is a damaged store
    config = BotConfig().model_dump(mode="json")
    t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
    base = dict(mark_update_frequency_hz=1.0, stream_heartbeat_lag_p95_ms=None, mark_freshness_p95_ms=500.0,
                order_failure_rate_pct=0.0, order_latency_p99_ms=80.0, ws_message_lag_p99_ms=None,
                backup_duration_avg_s=2.0, memory_rss_avg_mb=90.0, cpu_p95_pct=5.0)
    for run, changes in ((1, {}), (2, {"memory_rss_avg_mb": 140.0, "backup_duration_avg_s": 2.05})):
        events.start_run(t0 + timedelta(hours=run), "paper", {**config, "retired_flag": True} if run == 2 else config)
        if run == 2:
            events.append(t0 + timedelta(hours=run, minutes=1), "alert", None, severity="P2", source="reconciliation")
            events.append(t0 + timedelta(hours=run, minutes=2), "error", "BIP-20DEC30-CDE", stage="cycle", error="boom")
        events.append(t0 + timedelta(hours=run, minutes=5), "run_metrics", None, **{**base, **changes})
        events.end_run(t0 + timedelta(hours=run, minutes=5), {})
    events.close()
    return tmp_path


def test_defaults_compare_previous_with_latest_and_list_incidents_and_unknown_keys(tmp_path: Path):
    seed_store(tmp_path)
    result = perpsbot("drift-review", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "drift-review-1-2.md").read_text()
    rows = table_rows(report)
    assert rows["Memory usage (avg RSS)"][4] == "⚠️ Degraded"  # +50 MB
    assert rows["Backup duration (avg)"][4] == "✅ Stable"  # +2.5 %, under 5 % and the 1 s floor
    assert "| `alert` |" in report and "source=reconciliation" in report
    assert "stage=cycle" in report and "- [ ] No alerts during run 2 (1; run 1: 0)" in report
    assert "  - unknown: retired_flag - not a setting of this version" in report


def test_junit_rows_and_bad_inputs(tmp_path: Path):
    seed_store(tmp_path)
    (tmp_path / "old.xml").write_text(
        '<testsuite time="2.8">' + "".join(f'<testcase name="t{i}" time="0.01"/>' for i in range(38)) + "</testsuite>")
    (tmp_path / "new.xml").write_text(
        '<testsuite time="3.0">' + "".join(f'<testcase name="t{i}" time="0.01"/>' for i in range(51))
        + '<testcase name="t51" time="0.4"><failure/></testcase></testsuite>')
    result = perpsbot("drift-review", "--junit", "baseline=old.xml", "--junit", "new.xml", "--out", "r.md",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = table_rows((tmp_path / "r.md").read_text())
    assert rows["Test count"][1:5] == ["38", "52", "+14 (+36.8%)", "✅ Improved"]
    assert rows["Failures + errors"][4] == "⚠️ Degraded"
    assert rows["Test success rate"][1:3] == ["100%", "98.08%"]
    assert "- t51: 0.400s (failed)" in (tmp_path / "r.md").read_text()

    (tmp_path / "bad.xml").write_text("<testsuite><testcase")
    for args, message in (
        (("--junit", "bad.xml"), "error: junit bad.xml: not valid XML"),
        (("--baseline", "99"), "--baseline 99: no such run; runs recorded: 1, 2"),
        (("--profile", "dev"), "no runs recorded yet for profile 'dev'"),
    ):
        bad = perpsbot("drift-review", *args, cwd=tmp_path)
        assert bad.returncode == 2, (args, bad.stdout)
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Traceback" not in bad.stderr


def test_a_config_file_is_audited_even_with_unknown_keys(tmp_path: Path):
    seed_store(tmp_path)
    (tmp_path / "bot.toml").write_text('time_in_force = "IOC"\nuse_perps_bot_builder = true\n')
    result = perpsbot("drift-review", "--config", "bot.toml", "--out", "r.md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "r.md").read_text()
    assert "file bot.toml:" in report
    assert "  - unknown: use_perps_bot_builder - not a setting of this version; the bot refuses this file" in report
    assert "  - unused: time_in_force - set by file bot.toml but read only for limit orders" in report
