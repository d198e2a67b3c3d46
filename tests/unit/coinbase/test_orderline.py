"""OrderLine (order creation's own HTTP/1.1 connection) against a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from perpsbot.exchange.coinbase import orderline
from perpsbot.exchange.coinbase.orderline import OrderLine, OrderLineError

Reply = Callable[[bytes], bytes | None]  # request bytes -> answer bytes (None: close without answering)


class Server:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after: set[int] = set()  # close the connection after answering request n (0-based)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                request = head + await reader.readexactly(length)
                n = len(self.requests)
                self.requests.append(request)
                answer = self.replies[n](request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if n in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    await srv.start()
    yield srv
    await srv.stop()


def sized(body: bytes, status: str = "200 OK", extra: str = "") -> Reply:
    return lambda _: f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(*parts: bytes) -> Reply:
    chunks = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in parts)
    return lambda _: b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-T: 1\r\n\r\n"


async def test_answers_of_every_framing_on_one_kept_alive_connection(server: Server):
    server.replies = [sized(b'{"a":1}', extra="Retry-After: 2\r\n"), chunked(b'{"b":', b"2}"), sized(b"")]
    line = OrderLine("127.0.0.1", server.port, tls=False, host_header="example.test:1")
    sent: list[int] = []
    line.on_sent = lambda: sent.append(1)
    first = await line.post("/api/v3/brokerage/orders", {"Authorization": "Bearer t"}, b'{"x":1}')
    assert (first.status, first.body, first.headers["retry-after"]) == (200, b'{"a":1}', "2")
    second = await line.post("/p", {}, b"{}")
    assert (second.status, second.body) == (201, b'{"b":2}')
    third = await line.post("/p", {}, b"")
    assert (third.status, third.body) == (200, b"")
    assert server.connections == 1 and line.connects == 1 and sent == [1, 1, 1]
    request = server.requests[0]
    assert request.startswith(b"POST /api/v3/brokerage/orders HTTP/1.1\r\nHost: example.test:1\r\n")
    assert b"Content-Length: 7\r\n" in request and b"Authorization: Bearer t\r\n" in request
    assert request.endswith(b'\r\n\r\n{"x":1}')
    line.close()


async def test_a_connection_the_server_closed_or_left_idle_is_replaced_before_writing(server: Server, monkeypatch):
    server.replies = [sized(b"1"), sized(b"2"), sized(b"3"), lambda _: b"HTTP/1.1 200 OK\r\n\r\nto the end"]
    server.close_after = {0, 3}  # after the first answer, and after the one that runs to the close
    line = OrderLine("127.0.0.1", server.port, tls=False)
    assert (await line.post("/p", {}, b"")).body == b"1"
    await asyncio.sleep(0.05)  # the server's close arrives
    assert (await line.post("/p", {}, b"")).body == b"2"
    assert line.connects == 2
    monkeypatch.setattr(orderline, "IDLE_SECONDS", 0.0)
    await asyncio.sleep(0.01)
    assert (await line.post("/p", {}, b"")).body == b"3"
    assert line.connects == 3
    # no length: the body runs to the close, and the connection is not kept
    assert (await line.post("/p", {}, b"")).body == b"to the end"
    assert line._writer is None
    assert len(server.requests) == 4  # each request written once


@pytest.mark.parametrize("reply", [
    lambda _: None,  # the connection drops with no answer
    lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    lambda _: b"SMTP ready\r\n\r\n",
    lambda _: b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
], ids=["dropped", "short body", "not http", "bad header"])
async def test_a_failed_exchange_is_an_error_once_and_the_connection_is_dropped(server: Server, reply: Reply):
    server.replies = [reply, sized(b"ok")]
    server.close_after = {0}
    line = OrderLine("127.0.0.1", server.port, tls=False)
    with pytest.raises(OrderLineError):
        await line.post("/p", {}, b"{}")
    assert line._writer is None and len(server.requests) == 1  # never sent again from here
    assert (await line.post("/p", {}, b"{}")).body == b"ok"  # the next request opens a new connection
