"""The dashboard's routes on the bot's aiohttp app, behind a token.

Every route asks for the token: ``Authorization: Bearer <token>``, or the session
cookie that ``GET /dashboard?token=<token>`` sets (HttpOnly, SameSite=Strict) before
sending the browser on to the bare page URL. A wrong or missing token gets 401 and no
data. Requests from another origin (an ``Origin`` or ``Sec-Fetch-Site`` naming one) or
for a host name that is not the loopback (DNS rebinding) get 403. Nothing is loaded
from anywhere but these routes: the page, its script and its style ship with the
package.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from perpsbot.config.model import DASHBOARD_TOKEN_MIN_LENGTH
from perpsbot.dashboard.state import dashboard_state, read_equity_series
from perpsbot.store.sqlite import dumps

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

PAGE = "/dashboard"
STATE = "/api/state"
COOKIE_PREFIX = "perpsbot_dashboard_"
REFRESH_SECONDS = 2.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::\d{1,5})?")
_STATIC = {  # route -> (file in static/, content type)
    PAGE: ("index.html", "text/html"),
    f"{PAGE}/app.js": ("app.js", "application/javascript"),
    f"{PAGE}/app.css": ("app.css", "text/css"),
}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_dashboard(
    app: web.Application,
    bot: PerpsBot,
    token: str,
    health: Callable[[], Mapping[str, Any]],
    *,
    refresh_seconds: float = REFRESH_SECONDS,
) -> None:
    """Register ``GET /dashboard`` (the page, with ``/dashboard/app.js`` and
    ``/dashboard/app.css``) and ``GET /api/state`` (its data as JSON, polled by the page
    every ``refresh_seconds``) on ``app``. ``health()`` answers
    ``{"status": "ok" | "degraded" | "failing", "reasons": [...]}``."""
    if len(token) < DASHBOARD_TOKEN_MIN_LENGTH:
        raise ValueError(f"the dashboard token must be at least {DASHBOARD_TOKEN_MIN_LENGTH} characters")
    if refresh_seconds <= 0:
        raise ValueError("refresh_seconds must be > 0")
    gate = _Gate(token)
    folder = resources.files("perpsbot.dashboard") / "static"
    for route, (name, content_type) in _STATIC.items():
        body = (folder / name).read_bytes()
        app.router.add_get(route, gate.guard(_static(body, content_type), page=route == PAGE))

    async def state(request: web.Request) -> web.Response:
        raw = request.query.get("equity_after")
        after = None
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # '²' is a digit to isdigit, not to int
                return _plain(400, "equity_after must be a whole number")
            after = int(raw)
        series = await read_equity_series(bot, after)
        body = dashboard_state(bot, health, equity_after=after, equity_series=series)
        body["refresh_seconds"] = refresh_seconds
        return web.Response(text=dumps(body), content_type="application/json")

    app.router.add_get(STATE, gate.guard(state, page=False))


def _static(body: bytes, content_type: str) -> Handler:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return serve


class _Gate:
    def __init__(self, token: str) -> None:
        self._token = token.encode()
        # The cookie carries a value derived from the token, not the token itself.
        self._session = _derive(self._token, b"perpsbot dashboard session").encode()
        self._cookie = cookie_name(token)

    def guard(self, handler: Handler, *, page: bool) -> Handler:
        """``handler`` behind the origin and token checks; ``page``: the one route that
        takes ``?token=``."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = self._refuse_origin(request)
            if refused is not None:
                return _secured(_plain(403, refused))
            header = request.headers.get("Authorization")
            if header is not None:
                scheme, _, given = header.partition(" ")
                if scheme.lower() != "bearer" or not _same(given.strip().encode(), self._token):
                    return _secured(_unauthorized())
                return _secured(await handler(request))
            if page and "token" in request.query:
                if not _same(request.query["token"].encode(), self._token):
                    return _secured(_unauthorized())
                # Keep the token out of the address bar and history: on to the bare URL.
                response = web.Response(status=303, headers={"Location": PAGE})
                response.set_cookie(self._cookie, self._session.decode(), httponly=True, samesite="Strict", path="/")
                return _secured(response)
            cookie = request.cookies.get(self._cookie)
            if cookie is None or not _same(cookie.encode(), self._session):
                return _secured(_unauthorized())
            return _secured(await handler(request))

        return guarded

    @staticmethod
    def _refuse_origin(request: web.Request) -> str | None:
        host = request.host
        parsed = _HOST.fullmatch(host)
        name = (parsed.group("v6") or parsed.group("name")).lower() if parsed else ""
        if name not in LOOPBACK_HOSTS:
            return "the dashboard answers only to 127.0.0.1, localhost or [::1]"
        origin = request.headers.get("Origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return "cross-origin requests are refused"
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return "cross-origin requests are refused"
        return None


def cookie_name(token: str) -> str:
    """The session cookie's name: one per token, so that two bots on 127.0.0.1 (cookies
    ignore the port) do not sign each other's pages out."""
    return COOKIE_PREFIX + _derive(token.encode(), b"perpsbot dashboard cookie name")[:12]


def _derive(token: bytes, purpose: bytes) -> str:
    return hmac.new(token, purpose, hashlib.sha256).hexdigest()


def _same(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(given, expected)


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"{status}: {text}\n", content_type="text/plain")


def _unauthorized() -> web.Response:
    response = _plain(401, "wrong or missing dashboard token (open /dashboard?token=<token>)")
    response.headers["WWW-Authenticate"] = 'Bearer realm="perpsbot dashboard"'
    return response


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
