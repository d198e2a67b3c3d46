"""Candle history from Coinbase's public candles endpoint, into a CSV a backtest reads.

``GET /api/v3/brokerage/market/products/{product_id}/candles?start=&end=&granularity=``
(public, no key) answers at most 350 candles, newest first. ``download_candles``
asks page by page, oldest first, each page one request of at most 350 buckets, and
appends each page to the file as soon as it has it, so:

* resumable: run again and it continues after the last candle in the file
  (a half-written last line from an interrupted run is dropped first);
* gaps reported: Coinbase sends no candle for a bucket without trades; every run
  of missing buckets is listed (the file keeps only real candles — the backtest
  loader fills and reports gaps itself);
* only closed candles are written (the bucket still running is left for later);
* 429 and 5xx answers are retried with a pause (``Retry-After`` when given), other
  errors stop the download with the server's message; what was written stays.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp

from perpsbot.backtest.data import iso
from perpsbot.domain.clock import EPOCH

DEFAULT_BASE_URL = "https://api.coinbase.com"
CANDLES_PATH = "/api/v3/brokerage/market/products/{product_id}/candles"
MAX_CANDLES_PER_REQUEST = 350
GRANULARITIES = {
    "ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900, "THIRTY_MINUTE": 1800, "ONE_HOUR": 3600,
    "TWO_HOUR": 7200, "SIX_HOUR": 21600, "ONE_DAY": 86400,
}
SHORT_NAMES = {"1m": "ONE_MINUTE", "5m": "FIVE_MINUTE", "15m": "FIFTEEN_MINUTE", "30m": "THIRTY_MINUTE",
               "1h": "ONE_HOUR", "2h": "TWO_HOUR", "6h": "SIX_HOUR", "1d": "ONE_DAY"}
HEADER = ["date", "open", "high", "low", "close", "volume"]
class DownloadError(RuntimeError):
    """A download that cannot go on, worded in one line."""


@dataclass(frozen=True)
class Gap:
    start: int  # first missing bucket, epoch seconds
    count: int  # buckets missing

    def describe(self, granularity: int) -> str:
        last = self.start + (self.count - 1) * granularity
        span = f"{iso(self.start)}" if self.count == 1 else f"{iso(self.start)} .. {iso(last)}"
        return f"{span} ({self.count} candle{'s' if self.count > 1 else ''})"


@dataclass
class DownloadResult:
    path: Path
    granularity: int
    requested_start: int
    requested_end: int
    resumed_from: int | None = None  # the first bucket asked for when the file already had candles
    requests: int = 0
    retries: int = 0
    written: int = 0
    dropped_partial_line: bool = False
    gaps: list[Gap] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)


def parse_granularity(text: str) -> tuple[str, int]:
    name = text.strip()
    name = SHORT_NAMES.get(name.lower(), name.upper())
    if name not in GRANULARITIES:
        raise DownloadError(
            f"granularity '{text}' is not one of {', '.join(GRANULARITIES)} (or {', '.join(SHORT_NAMES)})"
        )
    return name, GRANULARITIES[name]


def parse_time(text: str, flag: str) -> int:
    """Unix seconds, or an ISO 8601 date / time (UTC unless it says otherwise)."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DownloadError(f"{flag} '{text}' is neither unix seconds nor an ISO date like 2026-01-31") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int((ts - EPOCH).total_seconds())


def _read_epoch(text: str) -> int:
    return int((datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH).total_seconds())


def last_candle_in(path: Path) -> tuple[int | None, bool]:
    """The start of the last complete candle in ``path`` and whether a half-written
    last line was cut off. Refuses a file that is not one of ours."""
    if not path.exists() or path.stat().st_size == 0:
        return None, False
    with path.open("rb") as f:
        head = f.readline().decode("utf-8", "replace").strip()
        if head.split(",") != HEADER:
            raise DownloadError(f"{path} exists and is not a candle file written by this command (header {head!r})")
        size = f.seek(0, os.SEEK_END)
        tail_from = max(0, size - 4096)
        f.seek(tail_from)
        tail = f.read()
    cut = False
    if not tail.endswith(b"\n"):  # an interrupted write: drop the partial line
        keep = tail_from + tail.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        cut = True
        with path.open("rb") as f:
            f.seek(max(0, keep - 4096))
            tail = f.read()
    lines = [line for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines or lines[-1].split(",")[0] == "date":
        return None, cut
    try:
        return _read_epoch(lines[-1].split(",")[0]), cut
    except ValueError:
        raise DownloadError(f"{path}: cannot read the time of its last line {lines[-1]!r}") from None


def _parse_candles(payload: Any, url: str) -> list[tuple[int, list[str]]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("candles"), list):
        raise DownloadError(f"unexpected answer from {url}: no 'candles' list")
    out = []
    for item in payload["candles"]:
        try:
            start = int(item["start"])
            values = [str(item[k]) for k in ("open", "high", "low", "close", "volume")]
            numbers = [Decimal(v) for v in values]
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise DownloadError(f"unexpected candle in the answer from {url}: {item!r}") from None
        if not all(n.is_finite() for n in numbers):
            raise DownloadError(f"candle {start} from {url} has a non-finite value")
        out.append((start, values))
    return out


async def _get(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], result: DownloadResult, max_retries: int,
    backoff: float,
) -> Any:
    attempt = 0
    while True:
        result.requests += 1
        try:
            async with session.get(url, params=params) as response:
                if response.status == 200:
                    try:
                        return await response.json(content_type=None)
                    except ValueError:
                        raise DownloadError(f"{url} answered with something that is not JSON") from None
                body = await response.text()
                retryable = response.status == 429 or response.status >= 500
                if not retryable or attempt >= max_retries:
                    raise DownloadError(f"{url} answered HTTP {response.status}: {_message(body)}")
                wait = _retry_after(response.headers.get("Retry-After")) or backoff * 2 ** attempt
        except aiohttp.ClientError as exc:
            if attempt >= max_retries:
                raise DownloadError(f"cannot reach {url}: {exc}") from None
            wait = backoff * 2 ** attempt
        attempt += 1
        result.retries += 1
        await asyncio.sleep(wait)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _message(body: str) -> str:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200] or "(empty body)"
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error_details") or data.get("error") or data)[:200]
    return str(data)[:200]


async def download_candles(
    product_id: str,
    start: int,
    end: int,
    granularity: str,
    path: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    now: Callable[[], float] = time.time,
    requests_per_second: float = 8.0,
    max_retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 30.0,
    on_page: Callable[[DownloadResult, int, int], None] | None = None,
) -> DownloadResult:
    """Fetch candles with starts in [``start``, ``end``) into ``path`` (see the module notes).
    ``on_page(result, done_until, total_end)`` is called after every page."""
    name, g = parse_granularity(granularity)
    if end <= start:
        raise DownloadError(f"--end ({iso(end)}) must be after --start ({iso(start)})")
    first = start - start % g  # buckets sit on the UTC grid
    closed_until = int(now()) // g * g  # the bucket starting here is still running
    stop = min(end, closed_until)
    result = DownloadResult(path, g, first, end)
    last, result.dropped_partial_line = last_candle_in(path)
    if last is not None and last + g > first:
        first = last + g
        result.resumed_from = first
    if first >= stop:
        return result
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    url = base_url.rstrip("/") + CANDLES_PATH.format(product_id=product_id)
    pause = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, headers={"Accept": "application/json"}) as session:
        with path.open("a", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            if fresh:
                writer.writerow(HEADER)
                out.flush()
            expected = first  # the next bucket we hope to see
            page_start = first
            while page_start < stop:
                page_end = min(page_start + MAX_CANDLES_PER_REQUEST * g, stop)  # exclusive
                # ``end`` one second short of the next bucket: inclusive or not, the page
                # never holds more than 350 buckets.
                params = {"start": str(page_start), "end": str(page_end - 1), "granularity": name,
                          "limit": str(MAX_CANDLES_PER_REQUEST)}
                started = time.monotonic()
                payload = await _get(session, url, params, result, max_retries, backoff)
                candles = sorted({s: v for s, v in _parse_candles(payload, url) if page_start <= s < page_end
                                  and s % g == 0}.items())
                buf = io.StringIO()
                rows = csv.writer(buf, lineterminator="\n")
                for bucket, values in candles:
                    if bucket > expected:
                        result.gaps.append(Gap(expected, (bucket - expected) // g))
                    rows.writerow([iso(bucket), *values])
                    expected = bucket + g
                out.write(buf.getvalue())
                out.flush()
                result.written += len(candles)
                page_start = page_end
                if on_page is not None:
                    on_page(result, page_start, stop)
                wait = pause - (time.monotonic() - started)
                if wait > 0 and page_start < stop:
                    await asyncio.sleep(wait)
            if expected < stop:
                result.gaps.append(Gap(expected, (stop - expected) // g))
    return result
