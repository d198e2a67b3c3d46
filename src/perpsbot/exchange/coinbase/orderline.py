"""``OrderLine``: order creation's own HTTP/1.1 connection, kept alive.

Every other request goes through aiohttp's client session. Order creation is the one
request on the bot's hot path (a quote in, an order out), and aiohttp's general request
machinery (URL building, cookie jar, tracing, multidict headers, payload objects) costs
about a third of a millisecond before the first byte leaves. Here the request is one
``bytes`` — request line, headers, JSON body — written with a single call on a connection
kept for orders alone, and the answer is read back with a minimal HTTP/1.1 parser
(``Content-Length``, chunked, or until close).

Nothing is ever sent twice from here: any failure after the connection was chosen closes
it and raises (``OrderLineError``); the caller treats the order's fate as unknown and
looks it up by ``client_order_id``. A connection idle for longer than
``IDLE_SECONDS`` (servers drop idle keep-alive connections) or that the server closed is
replaced before the request is written, not after.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_SECONDS = 15.0
MAX_HEADER_LINES = 100


class OrderLineError(Exception):
    """The connection failed or the answer was not HTTP/1.1 (the request may have arrived)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class OrderLine:
    def __init__(self, host: str, port: int, *, tls: bool, ssl: ssl_module.SSLContext | None = None,
                 host_header: str | None = None) -> None:
        self.host = host
        self.port = port
        self.host_header = host_header or host
        self._ssl: ssl_module.SSLContext | bool | None = (ssl if ssl is not None else True) if tls else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._idle_since = -float("inf")
        self.connects = 0
        # Called as each request's bytes are handed to the socket (benchmarks time the wire).
        self.on_sent: Callable[[], None] | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """One POST and its answer. Raises ``OrderLineError`` (or ``TimeoutError`` from the
        caller's deadline) with the connection closed on any failure."""
        try:
            writer = await self._connection()
            head = [f"POST {path} HTTP/1.1", f"Host: {self.host_header}", f"Content-Length: {len(body)}",
                    *(f"{name}: {value}" for name, value in headers.items()), "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + body)
            if self.on_sent is not None:
                self.on_sent()
            answer = await self._read_answer()
        except BaseException as exc:
            self.close()
            if isinstance(exc, (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                                ValueError, UnicodeError)):
                raise OrderLineError(f"{type(exc).__name__}: {exc}") from None
            raise
        if answer.headers.get("connection", "").lower() == "close":
            self.close()
        else:
            self._idle_since = time.monotonic()
        return answer

    async def _connection(self) -> asyncio.StreamWriter:
        reader, writer = self._reader, self._writer
        if (writer is None or reader is None or writer.is_closing() or reader.at_eof()
                or time.monotonic() - self._idle_since > IDLE_SECONDS):
            self.close()
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ssl)
            self._reader, self._writer = reader, writer
            self.connects += 1
        return writer

    async def _read_answer(self) -> Answer:
        reader = self._reader
        assert reader is not None
        status_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {status_line.strip()!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = (await reader.readuntil(b"\r\n")).decode("latin-1")
            if line == "\r\n":
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"a malformed header line: {line.strip()!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError(f"more than {MAX_HEADER_LINES} header lines")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # the body runs to the end of the connection
            body = await reader.read()
            headers["connection"] = "close"
        return Answer(status, headers, body)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer lines
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("a chunk not followed by CRLF")

    def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()


__all__ = ["IDLE_SECONDS", "Answer", "OrderLine", "OrderLineError"]
