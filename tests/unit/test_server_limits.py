"""The telemetry server under abuse: slow or silent clients, and no file descriptors left."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

from aiohttp import web

from perpsbot.logs import RateLimitedLog
from perpsbot.telemetry.server import TelemetryServer

BOUND = 0.5  # the header timeout the tests give the server


async def _pong(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def _server() -> TelemetryServer:
    app = web.Application()
    app.router.add_get("/ping", _pong)
    server = TelemetryServer(app, header_timeout=BOUND)
    await server.start(0)
    return server


async def _seconds_until_closed(sock: socket.socket, limit: float = 5.0) -> float:
    """How long until the server closes ``sock`` (reads whatever it answers meanwhile)."""
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    while True:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), limit)
        if not chunk:
            return time.monotonic() - began


async def test_a_connection_that_does_not_finish_its_headers_in_time_is_closed():
    server = await _server()
    loop = asyncio.get_running_loop()
    clients = []
    try:
        for first_bytes in (b"GET /ping HTT", b"", b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            if first_bytes:
                await loop.sock_sendall(sock, first_bytes)
            clients.append(sock)
        waited = await asyncio.gather(*(_seconds_until_closed(sock) for sock in clients))
        assert all(seconds < BOUND + 1.0 for seconds in waited), waited
        # a complete request is answered; the connection, then idle, is closed within the same bound
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        clients.append(sock)
        await loop.sock_sendall(sock, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"pong")
        assert await _seconds_until_closed(sock) < BOUND + 1.0
    finally:
        for sock in clients:
            sock.close()
        await server.stop()


async def test_accept_failing_for_want_of_file_descriptors_is_one_log_line_not_one_per_attempt(caplog):
    server = await _server()
    loop = asyncio.get_running_loop()
    exhausted = OSError(errno.EMFILE, "Too many open files")
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(2000):  # what asyncio reports: each accept attempt, up to 100 per wake-up
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": exhausted}
                )
            loop.call_exception_handler({"message": "something else", "exception": ValueError("kept")})
        lines = [r for r in caplog.records if "Too many open files" in r.getMessage()]
        assert len(lines) == 1 and lines[0].name == "perpsbot.telemetry.server", [r.getMessage() for r in lines[:3]]
        assert any(r.name == "asyncio" and "something else" in r.getMessage() for r in caplog.records)  # not swallowed
    finally:
        await server.stop()
    assert loop.get_exception_handler() is None  # the loop's own handler is back


def test_a_rate_limited_log_says_how_many_lines_it_left_out(caplog):
    now = [100.0]
    say = RateLimitedLog(logging.getLogger("perpsbot.test"), every=30, monotonic=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _step in range(70):  # one a second for 70 s
            say(logging.ERROR, "accept failed: %s", "EMFILE")
            now[0] += 1
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: EMFILE",
        "accept failed: EMFILE (29 more like it in the last 30 s not logged)",
        "accept failed: EMFILE (29 more like it in the last 30 s not logged)",
    ]


# Run in a child process: it lowers its own descriptor limit below what accept() needs.
_EXHAUST = r'''
import asyncio, logging, os, resource, socket
from aiohttp import web
from perpsbot.telemetry.server import TelemetryServer

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger().addHandler(Keep())

async def pong(request):
    return web.Response(text="pong")

async def main():
    app = web.Application()
    app.router.add_get("/ping", pong)
    server = TelemetryServer(app)
    await server.start(0)
    loop = asyncio.get_running_loop()
    waiting = []
    for _ in range(5):  # connected in the kernel's backlog, never accepted
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", server.port))
        except BlockingIOError:
            pass
        waiting.append(sock)
    fillers, (soft, hard) = [], resource.getrlimit(resource.RLIMIT_NOFILE)
    while True:  # take every free descriptor number below the highest in use
        fillers.append(os.open(os.devnull, os.O_RDONLY))
        if fillers[-1] >= max(int(n) for n in os.listdir("/proc/self/fd")) - 1:
            break
    resource.setrlimit(resource.RLIMIT_NOFILE, (fillers[-1] + 1, hard))
    await asyncio.sleep(1.5)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for fd in fillers:
        os.close(fd)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # descriptors again: it serves
    writer.write(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    for sock in waiting:
        sock.close()
    await server.stop()
    print(sum("out of system resource" in line for line in lines), answer.split(b"\r\n")[0].decode())

asyncio.run(main())
'''


def test_out_of_file_descriptors_the_server_logs_one_line_and_serves_again_once_they_are_back():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _EXHAUST], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "HTTP/1.1", "200", "OK"], result.stdout  # asyncio alone: ~500 a second
