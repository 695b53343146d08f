"""The remote codec server the Temporal Web UI and CLI call to show decrypted payloads.

    temporal-saga codec-server [--port 8888] [--origin http://localhost:8233]

Temporal's remote codec protocol: ``POST /encode`` and ``POST /decode`` with a JSON
body ``{"payloads": [...]}`` (payloads in protobuf JSON), answered likewise. Only
authorised people get an answer; a request proves it with either

* ``Authorization: Bearer <token>``, the token being ``TEMPORAL_SAGA_CODEC_TOKEN``
  (the ``temporal`` CLI: ``--codec-endpoint http://localhost:8888 --codec-auth
  'Bearer <token>'``), or
* a session cookie, which a browser gets by signing in with the token on the
  server's own page (``http://localhost:8888/``). The cookie is HttpOnly,
  SameSite=Strict and lasts 8 hours; it is its expiry time signed with the token,
  so changing the token ends every session. The Web UI sends it when its codec
  settings have "Include cross-origin credentials" on; the UI and the codec server
  must then be on the same host name (``localhost`` for both, say), or the browser
  treats the cookie as a third party's.

CORS is open to ``--origin`` only (the Web UI), so a page elsewhere cannot read
decoded data with an operator's session.

It runs on aiohttp, which bounds what a client can make it do: a request is
authenticated from its headers before any of its body is read; a body larger than
the limit is refused from its ``Content-Length`` (413), and malformed lengths by the
HTTP parser (400); a client that has not sent its request's headers within
``HEADER_SECONDS`` is disconnected (aiohttp's keep-alive timeout, which starts with
the connection), one that has not sent its body within ``BODY_SECONDS`` gets 408.
Each connection costs a coroutine, not a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import time
from collections.abc import Awaitable, Callable, Sequence
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from aiohttp import web
from google.protobuf.json_format import MessageToJson, Parse
from temporalio.api.common.v1 import Payloads

from ._codec import EncryptionCodec

SESSION_COOKIE = "temporal_saga_codec"
SESSION_SECONDS = 8 * 3600
#: Temporal refuses payloads over 2 MB by default; a body far larger is not a codec call.
MAX_BODY = 16 * 1024 * 1024
#: The sign-in form holds a token, nothing more.
MAX_LOGIN_BODY = 4096
#: A client must send its request's headers this soon after connecting (or after its
#: previous request), and its body this soon after its headers.
HEADER_SECONDS = 10.0
BODY_SECONDS = 30.0

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>temporal-saga codec server</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>temporal-saga codec server</h1>
<p>{message}</p>
<form method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
<p>Then, in the Web UI ({origin}), open the codec server settings, set the endpoint to
this server, turn on <em>Include cross-origin credentials</em>, and reload.</p>
</body></html>
"""


def _sign(token: str, expiry: int) -> str:
    return hmac.new(token.encode(), str(expiry).encode(), hashlib.sha256).hexdigest()


def session_value(token: str, *, now: float | None = None) -> str:
    """A session cookie's value: its expiry and the expiry's signature by the token."""
    expiry = int(now if now is not None else time.time()) + SESSION_SECONDS
    return f"{expiry}.{_sign(token, expiry)}"


def _valid_session(token: str, value: str) -> bool:
    expiry, _, signature = value.partition(".")
    # isascii: "²".isdigit() is True, but int("²") fails.
    if not (expiry.isascii() and expiry.isdigit()) or int(expiry) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _sign(token, int(expiry)).encode())


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=f'{{"error": "{message}"}}', content_type="application/json")


def _too_large(limit: int) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        limit, -1, text='{"error": "too large"}', content_type="application/json"
    )


async def _body(request: web.Request, limit: int) -> bytes:
    """The request's body, refused from its announced length if over ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        async with asyncio.timeout(BODY_SECONDS):
            body = b""
            while len(body) <= limit and (chunk := await request.content.read(65536)):
                body += chunk  # a chunked body has no announced length: stop past the limit
    except TimeoutError:
        raise _error(web.HTTPRequestTimeout, "body too slow") from None
    if len(body) > limit:
        raise _too_large(limit)
    return body


def codec_server(
    codec: EncryptionCodec, token: str, *, origin: str | Sequence[str] = "http://localhost:8233"
) -> web.Application:
    """The codec server as an aiohttp application (serve it with :func:`start_codec_server`,
    or mount it in an aiohttp application of your own).

    Args:
        codec: Decrypts (and encrypts) the payloads.
        token: What a request must present (as a bearer token or by signing in).
        origin: The Web UI's origin, or several (``http://localhost:8233`` and
            ``http://127.0.0.1:8233`` are different origins to a browser).

    Raises:
        ValueError: The token is empty.
    """
    if not token:
        raise ValueError("the codec server needs a token (TEMPORAL_SAGA_CODEC_TOKEN)")
    origins = [origin] if isinstance(origin, str) else list(origin)
    if not origins:
        raise ValueError("the codec server needs the Web UI's origin")

    def authorised(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        try:
            morsel = SimpleCookie(request.headers.get("Cookie", "")).get(SESSION_COOKIE)
        except CookieError:
            return False
        return morsel is not None and _valid_session(token, morsel.value)

    def page(message: str, status: int = 200) -> web.Response:
        body = _PAGE.format(message=html.escape(message), origin=html.escape(origins[0]))
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    async def route(request: web.Request) -> web.StreamResponse:
        # The UI adds a query string (?preserveStorageRefs=true); the CLI can template
        # the namespace into the endpoint: /<namespace>/decode.
        path = request.path.rstrip("/")
        name = "/" + path.rsplit("/", 1)[-1] if path else "/"
        if request.method == "OPTIONS":  # CORS preflight: browsers send no credentials
            return web.Response()
        if request.method == "GET" and name in ("/", "/login"):
            return page("Signed in." if authorised(request) else "Sign in to decode.")
        if request.method == "POST" and name == "/login":
            form = parse_qs((await _body(request, MAX_LOGIN_BODY)).decode(errors="replace"))
            given = form.get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return page("Wrong token.", status=401)
            response = page("Signed in.")
            response.set_cookie(
                SESSION_COOKIE,
                session_value(token),
                max_age=SESSION_SECONDS,
                path="/",
                httponly=True,
                samesite="Strict",
            )
            return response
        if name not in ("/encode", "/decode"):
            raise _error(web.HTTPNotFound, "unknown path")
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(
                request.method, ["POST", "OPTIONS"], text='{"error": "use POST"}'
            )
        if not authorised(request):  # before reading any of the body
            raise _error(web.HTTPUnauthorized, "bad or missing token")
        body = await _body(request, MAX_BODY)
        try:
            payloads = Parse(body, Payloads())
            work = codec.encode if name == "/encode" else codec.decode
            result = Payloads(payloads=await work(payloads.payloads))
        except Exception as err:  # a malformed body or a payload we cannot decrypt
            raise _error(web.HTTPBadRequest, type(err).__name__) from None
        return web.Response(text=MessageToJson(result), content_type="application/json")

    @web.middleware
    async def headers(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        asked = request.headers.get("Origin", "")
        added = {
            "Access-Control-Allow-Origin": asked if asked in origins else origins[0],
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Namespace",
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
            "Cache-Control": "no-store",
            # The sign-in page must not be framed (clickjacking) or leak its URL.
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
        }
        try:
            response = await handler(request)
        except web.HTTPException as err:
            err.headers.update(added)
            raise
        response.headers.update(added)
        return response

    app = web.Application(middlewares=[headers], client_max_size=MAX_BODY)
    app.router.add_route("*", "/{path:.*}", route)
    return app


async def start_codec_server(
    codec: EncryptionCodec,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8888,
    origin: str | Sequence[str] = "http://localhost:8233",
) -> web.AppRunner:
    """Start serving the codec server on ``host:port``; ``await runner.cleanup()`` stops it.

    Args:
        codec: Decrypts (and encrypts) the payloads.
        token: What a request must present (as a bearer token or by signing in).
        host: The address to listen on (keep it local, or behind TLS).
        port: The port to listen on.
        origin: The Web UI's origin, or several.

    Raises:
        ValueError: The token is empty.
        OSError: The address is in use.
    """
    runner = web.AppRunner(
        codec_server(codec, token, origin=origin),
        keepalive_timeout=HEADER_SECONDS,  # also bounds the wait for the first request
        access_log=None,  # keep the terminal quiet; request lines say nothing useful
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
