"""The remote codec server the Temporal Web UI and CLI call to show decrypted payloads.

    python -m temporal_saga codec-server [--port 8888] [--origin http://localhost:8233]

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
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from google.protobuf.json_format import MessageToJson, Parse
from temporalio.api.common.v1 import Payloads

from ._codec import EncryptionCodec

SESSION_COOKIE = "temporal_saga_codec"
SESSION_SECONDS = 8 * 3600
# Temporal refuses payloads over 2 MB by default; a body far larger is not a codec call.
MAX_BODY = 16 * 1024 * 1024

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
    if not expiry.isdigit() or int(expiry) < time.time():
        return False
    return hmac.compare_digest(signature, _sign(token, int(expiry)))


def make_server(
    codec: EncryptionCodec,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8888,
    origin: str | Sequence[str] = "http://localhost:8233",
) -> ThreadingHTTPServer:
    """A codec server (not yet serving: call ``serve_forever``).

    Args:
        codec: Decrypts (and encrypts) the payloads.
        token: What a request must present (as a bearer token or by signing in).
        host: The address to listen on.
        port: The port to listen on.
        origin: The Web UI's origin, or several (``http://localhost:8233`` and
            ``http://127.0.0.1:8233`` are different origins to a browser).

    Raises:
        ValueError: The token is empty.
    """
    if not token:
        raise ValueError("the codec server needs a token (TEMPORAL_SAGA_CODEC_TOKEN)")
    origins = [origin] if isinstance(origin, str) else list(origin)

    class Handler(BaseHTTPRequestHandler):
        @property
        def _route(self) -> str:
            # The UI adds a query string (?preserveStorageRefs=true); the CLI can
            # template the namespace into the endpoint: /<namespace>/decode.
            path = urlsplit(self.path).path.rstrip("/")
            return "/" + path.rsplit("/", 1)[-1] if path else "/"

        def _cors(self) -> None:
            asked = self.headers.get("Origin", "")
            self.send_header(
                "Access-Control-Allow-Origin", asked if asked in origins else origins[0]
            )
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", "Content-Type, Authorization, X-Namespace"
            )
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")

        def _reply(
            self,
            status: HTTPStatus,
            body: bytes = b"",
            *,
            kind: str = "application/json",
            cookie: str | None = None,
        ) -> None:
            self.send_response(status)
            self._cors()
            if cookie is not None:
                self.send_header("Set-Cookie", cookie)
            self.send_header("Cache-Control", "no-store")
            # The sign-in page must not be framed (clickjacking) or leak its URL.
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _page(self, status: HTTPStatus, message: str, cookie: str | None = None) -> None:
            body = _PAGE.format(message=html.escape(message), origin=html.escape(origins[0]))
            self._reply(status, body.encode(), kind="text/html; charset=utf-8", cookie=cookie)

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return True
            try:
                morsel = SimpleCookie(self.headers.get("Cookie", "")).get(SESSION_COOKIE)
            except CookieError:
                return False
            return morsel is not None and _valid_session(token, morsel.value)

        def _body(self) -> bytes | None:
            """The request's body, or None (answered 413) if it is too large."""
            length = int(self.headers.get("Content-Length", "0") or "0")
            if length > MAX_BODY:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b'{"error": "too large"}')
                return None
            return self.rfile.read(length)

        def do_OPTIONS(self) -> None:  # CORS preflight: browsers send no credentials
            self._reply(HTTPStatus.OK)

        def do_GET(self) -> None:
            if self._route not in ("/", "/login"):
                return self._reply(HTTPStatus.NOT_FOUND, b'{"error": "unknown path"}')
            signed_in = self._authorised()
            self._page(HTTPStatus.OK, "Signed in." if signed_in else "Sign in to decode.")

        def do_POST(self) -> None:
            route = self._route
            if route == "/login":
                return self._login()
            if route not in ("/encode", "/decode"):
                return self._reply(HTTPStatus.NOT_FOUND, b'{"error": "unknown path"}')
            if not self._authorised():
                return self._reply(HTTPStatus.UNAUTHORIZED, b'{"error": "bad or missing token"}')
            body = self._body()
            if body is None:
                return None
            try:
                payloads = Parse(body, Payloads())
                work = codec.encode if route == "/encode" else codec.decode
                result = Payloads(payloads=asyncio.run(work(payloads.payloads)))
            except Exception as err:  # a malformed body or a payload we cannot decrypt
                error = f'{{"error": "{type(err).__name__}"}}'
                return self._reply(HTTPStatus.BAD_REQUEST, error.encode())
            return self._reply(HTTPStatus.OK, MessageToJson(result).encode())

        def _login(self) -> None:
            body = self._body()
            if body is None:
                return None
            given = parse_qs(body.decode(errors="replace")).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return self._page(HTTPStatus.UNAUTHORIZED, "Wrong token.")
            cookie = (
                f"{SESSION_COOKIE}={session_value(token)}; Max-Age={SESSION_SECONDS}; "
                "Path=/; HttpOnly; SameSite=Strict"
            )
            self._page(HTTPStatus.OK, "Signed in.", cookie=cookie)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the terminal quiet; request lines say nothing useful

    return ThreadingHTTPServer((host, port), Handler)
