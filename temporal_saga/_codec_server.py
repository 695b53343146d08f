"""The remote codec server the Temporal Web UI and CLI call to show decrypted payloads.

    python -m temporal_saga codec-server [--port 8888] [--origin http://localhost:8233]

Temporal's remote codec protocol: ``POST /encode`` and ``POST /decode`` with a JSON
body ``{"payloads": [...]}`` (payloads in protobuf JSON), answered likewise. Every
request must carry ``Authorization: Bearer <token>`` with the token in
``TEMPORAL_SAGA_CODEC_TOKEN``; CORS is open to ``--origin`` only (the Web UI), so
that a browser page elsewhere cannot use an operator's session. Start the dev server
with ``--ui-codec-endpoint http://localhost:8888`` and set the token in the UI's
codec settings ("pass the user access token") or a browser extension.
"""

from __future__ import annotations

import asyncio
import hmac
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToJson, Parse
from temporalio.api.common.v1 import Payloads

from ._codec import EncryptionCodec


def make_server(
    codec: EncryptionCodec,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8888,
    origin: str = "http://localhost:8233",
) -> ThreadingHTTPServer:
    """A codec server (not yet serving: call ``serve_forever``)."""
    if not token:
        raise ValueError("the codec server needs a token (TEMPORAL_SAGA_CODEC_TOKEN)")

    class Handler(BaseHTTPRequestHandler):
        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", "Content-Type, Authorization, X-Namespace"
            )
            self.send_header("Access-Control-Allow-Credentials", "true")

        def _reply(self, status: HTTPStatus, body: bytes = b"") -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_OPTIONS(self) -> None:  # CORS preflight: no token needed
            self._reply(HTTPStatus.OK)

        def do_POST(self) -> None:
            if self.path not in ("/encode", "/decode"):
                return self._reply(HTTPStatus.NOT_FOUND, b'{"error": "unknown path"}')
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return self._reply(HTTPStatus.UNAUTHORIZED, b'{"error": "bad or missing token"}')
            length = int(self.headers.get("Content-Length", "0"))
            try:
                payloads = Parse(self.rfile.read(length), Payloads())
                work = codec.encode if self.path == "/encode" else codec.decode
                result = Payloads(payloads=asyncio.run(work(payloads.payloads)))
            except Exception as err:  # a malformed body or a payload we cannot decrypt
                error = f'{{"error": "{type(err).__name__}"}}'
                return self._reply(HTTPStatus.BAD_REQUEST, error.encode())
            return self._reply(HTTPStatus.OK, MessageToJson(result).encode())

        def log_message(self, format: str, *args: object) -> None:
            pass  # request lines could reveal nothing useful; keep the terminal quiet

    return ThreadingHTTPServer((host, port), Handler)
