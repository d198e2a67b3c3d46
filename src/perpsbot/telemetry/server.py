"""The bot's HTTP server on 127.0.0.1: ``/metrics`` (Prometheus), ``/health`` (JSON) and
the token-guarded web dashboard (``/dashboard``, ``/api/state``).

``build_web_app(bot)`` is the one place routes are registered; ``TelemetryServer``
binds it to ``http_port`` (0: any free port) and reports the port it got. A connection
has ``HEADER_TIMEOUT_SECONDS`` to send complete request headers, from its opening
(``HeaderDeadline``) and from the previous response (aiohttp's keep-alive timeout):
a client that trickles a request line, or sends nothing, cannot hold sockets open.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from perpsbot.dashboard import add_dashboard, ensure_dashboard_token
from perpsbot.logs import RateLimitedLog
from perpsbot.telemetry.health import evaluate

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# accept() failing for want of resources: asyncio reports each attempt (hundreds a second).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
HEADER_TIMEOUT_SECONDS = 5.0
BOT_KEY: web.AppKey[PerpsBot] = web.AppKey("bot")


class TelemetryServerError(RuntimeError):
    """The server cannot start, worded for the user."""


def build_web_app(bot: PerpsBot) -> web.Application:
    app = web.Application()
    app[BOT_KEY] = bot
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    add_dashboard(app, bot, ensure_dashboard_token(bot.config), lambda: evaluate(bot))
    return app


async def metrics(request: web.Request) -> web.Response:
    body = request.app[BOT_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    verdict = evaluate(request.app[BOT_KEY])
    return web.json_response(verdict, status=503 if verdict["status"] == "failing" else 200)


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed unless the first request's headers
    (up to the blank line) arrive within ``seconds`` of the connection opening."""

    def __init__(self, inner: asyncio.Protocol, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, for a blank line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        socket_transport = cast(asyncio.Transport, transport)  # a server's connection: a full Transport
        self._timer = asyncio.get_running_loop().call_later(self._seconds, socket_transport.abort)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:  # a lenient parser takes bare LF too
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class TelemetryServer:
    def __init__(self, app: web.Application, *, header_timeout: float = HEADER_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.header_timeout = header_timeout
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None
        self._out_of_resources = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler while the server runs: an accept that fails for
        want of file descriptors (or memory) is one line per 30 s with a count, not a
        traceback per attempt; anything else goes where it went before."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
            self._out_of_resources(logging.ERROR, "%s: %s", context.get("message", "out of resources"), exc)
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def start(self, port: int) -> int:
        """Listen on 127.0.0.1:``port``; returns the bound port."""
        runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.header_timeout)
        await runner.setup()
        loop = asyncio.get_running_loop()
        server = runner.server
        assert server is not None  # set up just now
        try:
            self._listener = await loop.create_server(
                lambda: HeaderDeadline(server(), self.header_timeout), HOST, port
            )
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise TelemetryServerError(
                    f"http_port {port} on {HOST} is in use: choose another port, 0 for any free one, or off"
                ) from None
            raise TelemetryServerError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = int(self._listener.sockets[0].getsockname()[1])
        self._loop = loop
        self._previous_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._on_loop_error)
        return self.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; cleanup closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)
            self._loop = None
