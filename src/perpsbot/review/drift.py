"""The drift review: two recorded runs (and optionally their JUnit test reports) compared
in the layout of the hand-written review it replaces — deployment context, drift summary,
performance comparison, config flags, telemetry, integration points, incidents — with a
PNG chart per production metric."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perpsbot.review.charts import metric_chart
from perpsbot.review.config_audit import AuditFinding, ConfigAudit, audit_changes, audit_run
from perpsbot.review.junit import JUnitRun
from perpsbot.review.runmetrics import METRIC_FIELDS
from perpsbot.review.thresholds import (
    CODE,
    DRIFT_SUMMARY,
    PERFORMANCE,
    PRODUCTION,
    MetricSpec,
    Verdict,
    evaluate,
    rule_text,
)
from perpsbot.store import EventStore, Run

INCIDENT_KINDS = ("alert", "alert_cleared", "error")
TELEMETRY_KINDS = ("run_metrics", "snapshot", "stream_heartbeat", "backup_completed")
STATUS_SHOWN = {
    "degraded": "⚠️ Degraded",
    "alert": "🚨 Over alert threshold",
    "improved": "✅ Improved",
    "stable": "✅ Stable",
    "no data": "⬜ No data",
}


class ReviewError(ValueError):
    """A run or input the review cannot use, worded for the user in one line."""


def resolve_run(runs: list[Run], ref: str, what: str) -> Run:
    """A run by id, or ``latest`` / ``previous`` (the one before the latest)."""
    if not runs:
        raise ReviewError("no runs recorded yet")
    ordered = sorted(runs, key=lambda r: r.id)
    text = ref.strip().lower()
    if text in ("latest", "previous"):
        index = -1 if text == "latest" else -2
        if len(ordered) < -index:
            raise ReviewError(f"--{what} {ref}: only one run is recorded")
        return ordered[index]
    try:
        wanted = int(text)
    except ValueError:
        raise ReviewError(f"--{what} '{ref}' is not a run id, 'latest' or 'previous'") from None
    for run in ordered:
        if run.id == wanted:
            return run
    shown = ", ".join(str(r.id) for r in ordered[-20:])
    raise ReviewError(f"--{what} {wanted}: no such run; runs recorded: {shown}")


@dataclass
class RunFacts:
    run: Run
    metrics: dict[str, float | None]  # METRIC_FIELDS; all None when the run recorded none
    recorded: bool  # a run_metrics event exists
    counts: dict[str, int]
    incidents: list[Any] = field(default_factory=list)
    errors_by_stage: Counter[str] = field(default_factory=Counter)

    @property
    def label(self) -> str:
        return f"run {self.run.id}"


def facts(events: EventStore, run: Run) -> RunFacts:
    recorded = events.query(kind="run_metrics", run_id=run.id, limit=1)
    data = recorded[0].data if recorded else {}
    metrics = {name: _number(data.get(name)) for name in METRIC_FIELDS}
    kinds = (*INCIDENT_KINDS, *TELEMETRY_KINDS, "order_placed", "order_failed", "order_rejected", "mark_error",
             "stream_fallback", "stream_resync", "reconciliation")
    counts = {kind: events.count(kind, run.id) for kind in kinds}
    incidents = sorted(
        (e for kind in INCIDENT_KINDS for e in events.query(kind=kind, run_id=run.id)), key=lambda e: e.id
    )
    stages = Counter(str(e.data.get("stage", "-")) for e in incidents if e.kind == "error")
    return RunFacts(run, metrics, bool(recorded), counts, incidents, stages)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class Row:
    spec: MetricSpec
    baseline: float | None
    current: float | None
    verdict: Verdict
    chart: str | None = None  # relative path of its PNG


@dataclass
class Review:
    baseline: RunFacts
    current: RunFacts
    rows: list[Row]
    code_rows: list[Row]
    junit: tuple[JUnitRun | None, JUnitRun | None]
    audits: list[ConfigAudit]
    changes: list[AuditFinding]
    generated: datetime
    store: str

    @property
    def flagged(self) -> list[Row]:
        return [r for r in (*self.code_rows, *self.rows) if r.verdict.flagged]


def junit_figures(run: JUnitRun | None) -> dict[str, float | None]:
    if run is None:
        return {spec.field: None for spec in CODE}
    slowest = run.slowest(1)
    return {
        "tests": run.total,
        "passed": run.count("passed"),
        "failed": run.count("failed") + run.count("error"),
        "skipped": run.count("skipped"),
        "success_rate_pct": run.success_rate_pct,
        "seconds": run.seconds,
        "slowest_seconds": slowest[0].seconds if slowest else None,
    }


def build(
    events: EventStore, baseline: Run, current: Run, *,
    junit: tuple[JUnitRun | None, JUnitRun | None] = (None, None),
    file_audit: ConfigAudit | None = None, now: datetime | None = None,
) -> Review:
    base, cur = facts(events, baseline), facts(events, current)
    rows = [Row(s, base.metrics[s.field], cur.metrics[s.field],
                evaluate(s, base.metrics[s.field], cur.metrics[s.field])) for s in PRODUCTION]
    code_rows: list[Row] = []
    if junit[0] is not None or junit[1] is not None:
        b, c = junit_figures(junit[0]), junit_figures(junit[1])
        code_rows = [Row(s, b[s.field], c[s.field], evaluate(s, b[s.field], c[s.field])) for s in CODE]
    audits = [
        audit_run(f"baseline {base.label}", baseline.config, baseline.profile),
        audit_run(f"current {cur.label}", current.config, current.profile),
    ]
    if file_audit is not None:
        audits.append(file_audit)
    return Review(base, cur, rows, code_rows, junit, audits, audit_changes(baseline.config, current.config),
                  now or datetime.now(UTC), str(events.path.parent))


def write(review: Review, out: Path) -> list[Path]:
    """Write the Markdown report to ``out`` and its charts beside it (``<stem>-charts/``);
    returns every path written."""
    chart_dir = out.parent / f"{out.stem}-charts"
    chart_dir.mkdir(parents=True, exist_ok=True)
    written = []
    b, c = review.baseline.label.upper(), review.current.label.upper()
    for row in review.rows:
        if row.baseline is None and row.current is None:
            continue
        path = chart_dir / f"{row.spec.field}.png"
        unit = row.spec.unit.upper()
        path.write_bytes(metric_chart(
            f"{row.spec.label} ({unit})" if unit else row.spec.label, unit, row.baseline, row.current,
            alert=row.spec.alert, flagged=row.verdict.flagged, names=(b, c),
        ))
        row.chart = f"{chart_dir.name}/{path.name}"
        written.append(path)
    out.write_text(markdown(review), encoding="utf-8")
    return [out, *written]


# ----- Markdown -------------------------------------------------------------------------


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
    return f"{text} {unit}".rstrip() if unit != "%" else f"{text}%"


def _delta(row: Row) -> str:
    delta, pct = row.verdict.delta, row.verdict.delta_pct
    if delta is None:
        return "n/a"
    unit = "pp" if row.spec.unit == "%" else row.spec.unit
    shown = f"{delta:+,.3f}".rstrip("0").rstrip(".") if delta != int(delta) else f"{int(delta):+,}"
    text = f"{shown} {unit}".rstrip()
    return f"{text} ({pct:+.1f}%)" if pct is not None else text


def _table(rows: list[Row], *, charts: bool, base: str, cur: str) -> list[str]:
    head = f"| Signal | Baseline ({base}) | Current ({cur}) | Delta | Status |" + (" Chart |" if charts else "")
    rule = "|--------|----------|---------|-------|--------|" + ("-------|" if charts else "")
    lines = [head, rule]
    for row in rows:
        cells = [row.spec.label, _value(row.baseline, row.spec.unit), _value(row.current, row.spec.unit),
                 _delta(row), STATUS_SHOWN[row.verdict.status]]
        if charts:
            cells.append(f"[png]({row.chart})" if row.chart else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _check(done: bool) -> str:
    return "[x]" if done else "[ ]"


def _ts(text: str | None) -> str:
    if not text:
        return "not recorded (no clean shutdown)"
    try:
        return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def _duration(run: Run) -> str:
    if not run.ended_at:
        return "unknown"
    seconds = (datetime.fromisoformat(run.ended_at) - datetime.fromisoformat(run.started_at)).total_seconds()
    return f"{seconds:,.1f} s"


def _context(f: RunFacts, role: str) -> list[str]:
    cfg = f.run.config
    symbols = cfg.get("symbols") or []
    mode = "dry run" if cfg.get("dry_run") else "trading"
    return [
        f"- [x] {role}: `{f.label}` — profile `{f.run.profile}`, exchange `{cfg.get('exchange', '?')}`, {mode}, "
        f"symbols `{', '.join(symbols)}`",
        f"  - started `{_ts(f.run.started_at)}`, ended `{_ts(f.run.ended_at)}`, duration {_duration(f.run)}",
        f"  - production metrics recorded: {'yes (run_metrics event)' if f.recorded else 'no'}",
    ]


def _findings(review: Review) -> list[str]:
    lines = ["```"]
    flagged = review.flagged
    if flagged:
        lines.append(f"⚠️ {len(flagged)} row(s) flagged:")
        for row in flagged:
            past = f" (alert threshold {row.spec.alert:g} {row.spec.unit})" if row.verdict.status == "alert" else ""
            lines.append(f"  - {row.spec.label}: {_value(row.baseline, row.spec.unit)} -> "
                         f"{_value(row.current, row.spec.unit)}, {_delta(row)}{past}")
    else:
        lines.append("✅ No metric moved beyond its threshold.")
    missing = [r.spec.label for r in review.rows if r.verdict.status == "no data"]
    if missing:
        lines.append("⬜ Not compared (no data on one side or both): " + ", ".join(missing))
    for f in (review.baseline, review.current):
        if not f.recorded:
            lines.append(f"⚠️ {f.label} recorded no run_metrics (it did not shut down cleanly, or predates them)")
    lines.append("```")
    return lines


def markdown(review: Review) -> str:
    b, c = review.baseline, review.current
    bl, cl = b.label, c.label
    out: list[str] = [
        f"# Drift Review - {bl} → {cl}",
        f"**Review Date**: {review.generated.strftime('%Y-%m-%d %H:%M UTC')}",
        "**Reviewer**: perpsbot drift-review (automated)",
        f"**Scope**: {bl} (baseline) against {cl} (current), store `{review.store}`",
        "",
        "---",
        "",
        "## 1. Deployment Context",
        "",
        *_context(b, "Baseline"),
        *_context(c, "Current"),
        "",
        "---",
        "",
        "## 2. Drift Detection Summary",
        "",
    ]
    # code level
    out.append("### Code-Level Metrics (JUnit XML)")
    out.append("")
    if review.code_rows:
        jb, jc = review.junit
        out.append(f"Baseline reports: {', '.join(jb.files) if jb else 'none given'}; "
                   f"current reports: {', '.join(jc.files) if jc else 'none given'}.")
        out.append("")
        out += _table(review.code_rows, charts=False, base="baseline", cur="current")
    else:
        out.append("No JUnit reports given (`--junit FILE`).")
    out += ["", "### Production Metrics", ""]
    out += _table([r for r in review.rows if r.spec in DRIFT_SUMMARY], charts=True, base=bl, cur=cl)
    out += ["", "**Findings:**", *_findings(review), "", "**Thresholds:**", "", rule_text(), "", "---", ""]
    # performance
    out += ["## 3. Performance Baseline Comparison", ""]
    jb, jc = review.junit
    if jb is not None or jc is not None:
        out += ["### Code-Level Performance", ""]
        out += _table([r for r in review.code_rows if r.spec.field in ("seconds", "slowest_seconds")],
                      charts=False, base="baseline", cur="current")
        out.append("")
    out += ["### Production Performance", ""]
    out += _table([r for r in review.rows if r.spec in PERFORMANCE], charts=True, base=bl, cur=cl)
    out += ["", "**Metric definitions:**", "", "```"]
    out += [f"{name}: {text}" for name, text in METRIC_FIELDS.items()]
    out += ["```", "", "---", ""]
    # flags
    out += ["## 4. Feature Flag Verification", ""]
    unknown = [f for a in review.audits for f in a.findings if f.kind == "unknown"]
    unused = [f for a in review.audits for f in a.findings if f.kind == "unused"]
    out += [
        f"- {_check(not unknown)} No unknown (retired or misspelt) settings",
        f"- {_check(not unused)} No setting given a value without effect",
        f"- {_check(not review.changes)} Same configuration in both runs",
        "",
        "**Flag Status:**",
        "```",
    ]
    for audit in review.audits:
        if audit.findings:
            out.append(f"{audit.where}:")
            out += [f"  - {f.kind}: {f.key} - {f.detail}" for f in audit.findings]
        else:
            out.append(f"{audit.where}: no unknown or unused settings")
    if review.changes:
        out.append(f"changed from {bl} to {cl}:")
        out += [f"  - {f.key}: {f.detail}" for f in review.changes]
    else:
        out.append(f"no setting changed from {bl} to {cl}")
    out += ["```", "", "---", ""]
    # telemetry
    out += ["## 5. Telemetry & Observability", ""]
    covered_b = {r.spec.field for r in review.rows if r.baseline is not None}
    gaps = [r.spec.label for r in review.rows if r.spec.field in covered_b and r.current is None]
    out += [
        f"- {_check(b.recorded and c.recorded)} Both runs recorded their production metrics (run_metrics)",
        f"- {_check(not gaps)} No gaps: every metric measured in the baseline is measured in the current run"
        + (f" (missing: {', '.join(gaps)})" if gaps else ""),
        "",
        "**Telemetry events:**",
        "",
        f"| Event | {bl} | {cl} |",
        "|-------|------|------|",
    ]
    out += [f"| `{kind}` | {b.counts[kind]} | {c.counts[kind]} |" for kind in TELEMETRY_KINDS]
    out += ["", "---", ""]
    # integration points
    out += ["## 6. Integration Points", "", "### External APIs", ""]
    out += [f"| Signal | {bl} | {cl} |", "|--------|------|------|"]
    for kind, label in (("order_placed", "Orders placed"), ("order_failed", "Orders failed (fate unknown / error)"),
                        ("order_rejected", "Orders rejected by the exchange"), ("mark_error", "Mark update errors"),
                        ("stream_fallback", "Stream fallbacks to polling"), ("stream_resync", "Book resyncs")):
        out.append(f"| {label} | {b.counts[kind]} | {c.counts[kind]} |")
    for key, label in (("stream_reconnects", "WebSocket reconnects"), ("stream_gaps", "WebSocket sequence gaps")):
        out.append(f"| {label} | {_summary(b.run, key)} | {_summary(c.run, key)} |")
    out += ["", "### Internal Services", ""]
    out.append(f"| Signal | {bl} | {cl} |")
    out.append("|--------|------|------|")
    out.append(f"| Reconciliations | {b.counts['reconciliation']} | {c.counts['reconciliation']} |")
    out.append(f"| Backups completed | {b.counts['backup_completed']} | {c.counts['backup_completed']} |")
    stages = sorted(set(b.errors_by_stage) | set(c.errors_by_stage))
    for stage in stages:
        out.append(f"| Errors in stage `{stage}` | {b.errors_by_stage[stage]} | {c.errors_by_stage[stage]} |")
    out += ["", "---", ""]
    # incidents
    alerts = [e for e in c.incidents if e.kind == "alert"]
    errors = [e for e in c.incidents if e.kind == "error"]
    out += [
        "## 7. Incident Review",
        "",
        f"- {_check(not alerts)} No alerts during {cl} ({len(alerts)}; {bl}: {b.counts['alert']})",
        f"- {_check(not errors)} No errors during {cl} ({len(errors)}; {bl}: {b.counts['error']})",
        f"- {_check(not review.flagged)} No metric regressions beyond thresholds",
        "",
    ]
    if c.incidents:
        out += ["| Time (UTC) | Event | Symbol | Detail |", "|------------|-------|--------|--------|"]
        for e in c.incidents[:200]:
            detail = " ".join(", ".join(f"{k}={v}" for k, v in sorted(e.data.items())).replace("|", "/").split())
            out.append(f"| {_ts(e.ts)} | `{e.kind}` | {e.symbol or '-'} | {detail[:200]} |")
        if len(c.incidents) > 200:
            out.append(f"| ... | {len(c.incidents) - 200} more | | |")
    else:
        out.append(f"No `alert`, `alert_cleared` or `error` events in {cl}.")
    out += ["", "---", ""]
    if jb is not None or jc is not None:
        out += ["## Appendix: Test Performance Details", ""]
        for name, run in (("Baseline", jb), ("Current", jc)):
            if run is None:
                continue
            out.append(f"### {name} ({run.total} tests, {run.seconds:g}s total)")
            out += ["", "**Slowest Tests:**"]
            out += [f"- {t.name}: {t.seconds:.3f}s ({t.outcome})" for t in run.slowest(5)]
            failing = [t for t in run.cases if t.outcome in ("failed", "error")]
            if failing:
                out += ["", "**Failing Tests:**"]
                out += [f"- {t.name} ({t.outcome})" for t in failing[:50]]
            out.append("")
        out += ["---", ""]
    flagged = review.flagged
    out.append("**Review Status**: " + (f"⚠️ **{len(flagged)} row(s) flagged**: "
                                        + ", ".join(r.spec.label for r in flagged)
                                        if flagged else "✅ **No drift beyond thresholds**"))
    out.append("**Recommendation**: " + ("**INVESTIGATE** the flagged rows before promoting" if flagged
                                         else "**APPROVE**: no regression found"))
    return "\n".join(out) + "\n"


def _summary(run: Run, key: str) -> str:
    if run.summary is None or run.summary.get(key) is None:
        return "n/a"
    return str(run.summary[key])
