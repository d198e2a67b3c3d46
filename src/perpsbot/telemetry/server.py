"""The bot's HTTP server on 127.0.0.1: ``/metrics`` (Prometheus), ``/health`` (JSON) and
the token-guarded web dashboard (``/dashboard``, ``/api/state``).

``build_web_app(bot)`` is the one place routes are registered; ``TelemetryServer``
binds it to ``http_port`` (0: any free port) and reports the port it got.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from perpsbot.dashboard import add_dashboard, ensure_dashboard_token
from perpsbot.telemetry.health import evaluate

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

HOST = "127.0.0.1"
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


class TelemetryServer:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port: int) -> int:
        """Listen on 127.0.0.1:``port``; returns the bound port."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise TelemetryServerError(
                    f"http_port {port} on {HOST} is in use: choose another port, 0 for any free one, or off"
                ) from None
            raise TelemetryServerError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
