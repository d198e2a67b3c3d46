// perpsbot dashboard: polls /api/state and redraws. Text goes in through textContent
// only; amounts arrive as strings (money to the cent) and are shown as they are.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MAX_POINTS = 5000;
let history = [];      // [[iso time, "equity"], ...] from the run's snapshots
let lastId = null;     // the newest snapshot event the page has
let refreshMs = 2000;

function $(id) { return document.getElementById(id); }

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function signClass(amount) {
  if (amount === null || amount === undefined) return "";
  return amount.startsWith("-") ? "neg" : (/[1-9]/.test(amount) ? "pos" : "");
}

function fillTable(id, rows, empty, render) {
  const body = $(id).tBodies[0];
  const out = rows.map((row) => {
    const tr = document.createElement("tr");
    render(row).forEach((td) => tr.appendChild(td));
    return tr;
  });
  if (!out.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = $(id).tHead.rows[0].cells.length;
    tr.appendChild(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 120 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
}

function setMoney(id, amount, signed) {
  const el = $(id);
  el.textContent = amount === null || amount === undefined ? "–" : amount;
  el.className = "big " + (signed ? signClass(amount) : "");
}

function setBadge(id, text) {
  const el = $(id);
  el.textContent = text;
  el.className = "badge " + text;
}

function listItems(id, items, empty) {
  const out = items.map((make) => { const li = document.createElement("li"); make(li); return li; });
  if (!out.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = empty;
    out.push(li);
  }
  $(id).replaceChildren(...out);
}

function span(text, cls) {
  const s = document.createElement("span");
  s.textContent = text;
  if (cls) s.className = cls;
  return s;
}

function alertItem(a) {
  return (li) => {
    if (a.kind === "alert_cleared") li.className = "cleared";
    li.appendChild(span(a.severity || "alert", "sev " + (a.severity || "")));
    const what = (a.kind === "alert_cleared" ? "cleared: " : "") + (a.rule || "alert") + (a.symbol ? " " + a.symbol : "");
    li.appendChild(span(what + (a.message ? " — " + a.message : "")));
    if (a.details) li.appendChild(span(" (" + a.details + ")", "muted small"));
    li.appendChild(span("  " + a.ts.replace("T", " ").slice(0, 19), "muted small"));
  };
}

function drawChart(points) {
  const svg = $("equity-chart");
  const W = 1000, H = 220, pad = 10;
  // Numbers only to place the line; the labels are the server's strings.
  const pts = points.map(([t, e]) => [Date.parse(t), Number(e), e]).filter(([t, e]) => isFinite(t) && isFinite(e));
  const nodes = [];
  if (pts.length) {
    const low = pts.reduce((a, p) => (p[1] < a[1] ? p : a)), high = pts.reduce((a, p) => (p[1] > a[1] ? p : a));
    let lo = low[1], hi = high[1];
    if (hi - lo < 0.01) { lo -= 1; hi += 1; }
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const x = (t) => pad + (W - 2 * pad) * (t - t0) / (t1 - t0);
    const y = (e) => H - pad - (H - 2 * pad) * (e - lo) / (hi - lo);
    for (const level of [lo, (lo + hi) / 2, hi]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "grid-line");
      line.setAttribute("x1", 0); line.setAttribute("x2", W);
      line.setAttribute("y1", y(level)); line.setAttribute("y2", y(level));
      nodes.push(line);
    }
    const poly = document.createElementNS(SVG, "polyline");
    poly.setAttribute("class", "line");
    const drawn = pts.length === 1 ? [pts[0], [t1, pts[0][1]]] : pts;
    poly.setAttribute("points", drawn.map(([t, e]) => x(t).toFixed(1) + "," + y(e).toFixed(1)).join(" "));
    nodes.push(poly);
    const when = (p) => new Date(p[0]).toISOString().replace("T", " ").slice(0, 19);
    $("equity-range").textContent = `${low[2]} – ${high[2]} USD, ${when(pts[0])} → ${when(pts[pts.length - 1])} UTC`;
  } else {
    $("equity-range").textContent = "no equity figures yet";
  }
  svg.replaceChildren(...nodes);
}

function render(s) {
  const b = s.bot;
  $("bot-info").textContent = `${b.profile} on ${b.exchange}${b.dry_run ? " (dry run)" : ""} · run ${b.run_id ?? "–"} · ${b.cycles} cycles · last cycle ${b.cycle_ms} ms`;
  setBadge("health", s.health.status);
  setBadge("risk-mode", s.risk.mode);

  setMoney("equity", s.account.equity, false);
  const change = s.account.equity_change;
  $("equity-change").textContent = change === null ? "" : `since start: ${change} (from ${s.account.start_equity})`;
  const m = s.account.margin;
  const sweeps = m === null ? "" : m.sweeps.map((w) => `${w.status.toLowerCase()} ${w.amount ?? "all"}`).join(", ");
  $("account-margin").textContent = m === null ? "" : `${m.window} margin · liquidation buffer ${m.liquidation_buffer}`
    + (m.liquidation_buffer_pct === null ? "" : ` (${m.liquidation_buffer_pct} %)`)
    + ` · buying power ${m.buying_power} · sweeps: ${sweeps || "none"}`;
  for (const k of ["net", "realized", "unrealized", "funding"]) setMoney("pnl-" + k, s.pnl[k], true);
  setMoney("pnl-fees", s.pnl.fees, false); // a cost: never shown as a gain

  fillTable("positions", s.positions, "no open positions", (p) => [
    cell(p.symbol), cell(p.expires || "-", "muted"), cell(p.side, p.side === "long" ? "pos" : "neg"), cell(p.size, "num"), cell(p.entry_price, "num"),
    cell(p.mark, "num"), cell(p.notional, "num"), cell(p.unrealized, "num " + signClass(p.unrealized)),
    cell(p.realized, "num " + signClass(p.realized)), cell(p.leverage, "num"),
  ]);
  fillTable("marks", s.marks, "no symbols", (m) => [
    cell(m.symbol), cell(m.mark, "num"), cell(seconds(m.age_seconds), "num " + m.freshness), cell(m.freshness, m.freshness),
  ]);
  fillTable("orders", s.orders, "no open orders", (o) => [
    cell(o.symbol), cell(o.side), cell(o.type + (o.reduce_only ? " RO" : "")), cell(o.size, "num"),
    cell(o.filled_size, "num"), cell(o.limit_price, "num"), cell(o.status), cell(seconds(o.age_seconds), "num"),
    cell(o.client_order_id.slice(0, 12), "muted small"),
  ]);
  fillTable("pnl", s.pnl.symbols, "no fills this run", (p) => [
    cell(p.symbol), cell(p.realized, "num " + signClass(p.realized)), cell(p.unrealized, "num " + signClass(p.unrealized)),
    cell(p.fees, "num"), cell(p.funding, "num " + signClass(p.funding)), cell(p.net, "num " + signClass(p.net)),
  ]);

  const reasons = [];
  for (const r of s.health.reasons) reasons.push((li) => { li.appendChild(span("health ", "label")); li.appendChild(span(r)); });
  for (const r of s.risk.kill_reasons) reasons.push((li) => { li.appendChild(span("kill ", "label")); li.appendChild(span(r, "neg")); });
  for (const r of s.risk.reduce_only_reasons) reasons.push((li) => { li.appendChild(span("reduce-only ", "label")); li.appendChild(span(r)); });
  for (const [sym, rs] of Object.entries(s.risk.symbol_reduce_only || {})) {
    reasons.push((li) => { li.appendChild(span("reduce-only " + sym + " ", "label")); li.appendChild(span(rs.join(", "), "neg")); });
  }
  listItems("reasons", reasons, "all clear");
  listItems("alerts-active", s.alerts.active.map(alertItem), "none");
  listItems("alerts-recent", s.alerts.recent.map(alertItem), "none this run");

  history = history.concat(s.equity_history.points);
  if (history.length > MAX_POINTS) history = history.filter((_, i) => i % 2 === 0 || i === history.length - 1);
  lastId = s.equity_history.last_id;
  const live = s.account.equity === null ? [] : [[s.generated_at, s.account.equity]];
  drawChart(history.concat(live));
  $("footer").textContent = `bot time ${s.generated_at.replace("T", " ").slice(0, 19)} UTC · symbols ${b.symbols.join(", ")}`;
  refreshMs = Math.max(500, 1000 * (s.refresh_seconds || 2));
}

function connection(text, ok) {
  const el = $("connection");
  el.textContent = text;
  el.className = "conn " + (ok ? "ok" : "bad");
}

async function poll() {
  const url = "/api/state" + (lastId === null ? "" : "?equity_after=" + encodeURIComponent(lastId));
  try {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    if (r.status === 401) {
      connection("signed out: open /dashboard?token=… again", false);
      return; // no more polling without a session
    }
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    connection("live · updated " + new Date().toLocaleTimeString(), true);
  } catch (e) {
    connection("connection lost, retrying", false);
  }
  setTimeout(poll, refreshMs);
}

document.addEventListener("DOMContentLoaded", poll);
