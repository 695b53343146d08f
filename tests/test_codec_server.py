"""The codec server: decodes for the token holder only, and survives abusive clients."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from google.protobuf.json_format import MessageToJson
from temporalio.api.common.v1 import Payload, Payloads

from temporal_saga.encryption import EncryptionCodec, start_codec_server
from temporal_saga.encryption import _server as server_module
from temporal_saga.encryption._server import SESSION_COOKIE, session_value

from .conftest import free_port
from .helpers import PASSPORT

UI = ["http://localhost:8233", "http://127.0.0.1:8233"]
CODEC = EncryptionCodec({"k1": b"k" * 32})


def post(
    url: str, body: bytes, token: str | None = None, **headers: str
) -> tuple[int, bytes, str | None]:
    """POST; return the status, the body and the Set-Cookie header."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers["Set-Cookie"]
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers["Set-Cookie"]


def raw(port: int, request: bytes, *, wait: float = 10) -> bytes:
    """Send raw bytes; return what the server answers before it closes (or ``wait`` ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while chunk := conn.recv(4096):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except TimeoutError:
            pass
        return answer


@pytest.fixture
async def codec_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    # Short deadlines, so the slow-client cases take seconds.
    monkeypatch.setattr(server_module, "HEADER_SECONDS", 1.0)
    monkeypatch.setattr(server_module, "BODY_SECONDS", 1.0)
    port = free_port()
    runner = await start_codec_server(CODEC, "s3cret", port=port, origin=UI)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def sealed_passport() -> bytes:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=f'"{PASSPORT}"'.encode())
    return MessageToJson(Payloads(payloads=await CODEC.encode([plain]))).encode()


async def decode(base: str, token: str | None = None, **headers: str) -> tuple[int, bytes]:
    status, body, _ = await asyncio.to_thread(
        post, f"{base}/decode", await sealed_passport(), token, **headers
    )
    if status == 200:
        [payload] = json.loads(body)["payloads"]
        return status, base64.b64decode(payload["data"])
    return status, body


async def test_decodes_for_the_token_holder_only(codec_url: str) -> None:
    assert await decode(codec_url, "s3cret") == (200, f'"{PASSPORT}"'.encode())
    # The temporal CLI templates the namespace into the endpoint: /<namespace>/decode.
    status, _, _ = await asyncio.to_thread(
        post, f"{codec_url}/default/decode", await sealed_passport(), "s3cret"
    )
    assert status == 200
    for token in (None, "wrong"):
        status, body = await decode(codec_url, token)
        assert status == 401 and PASSPORT.encode() not in body
    # A browser signs in on the server's page and gets a session cookie.
    status, _, cookie = await asyncio.to_thread(post, f"{codec_url}/login", b"token=wrong")
    assert status == 401 and cookie is None
    status, _, cookie = await asyncio.to_thread(post, f"{codec_url}/login", b"token=s3cret")
    assert status == 200 and cookie is not None
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await asyncio.to_thread(urllib.request.urlopen, f"{codec_url}/", timeout=10)
    with page:
        assert page.headers["X-Frame-Options"] == "DENY"
        assert b'name="token"' in page.read()
    session = cookie.split(";")[0]
    assert await decode(codec_url, Cookie=session) == (200, f'"{PASSPORT}"'.encode())
    forged = f"{SESSION_COOKIE}={session_value('not the token')}"
    expired = f"{SESSION_COOKIE}={session_value('s3cret', now=time.time() - 9 * 3600)}"
    for bad in (forged, expired, f"{SESSION_COOKIE}=garbage"):
        assert (await decode(codec_url, Cookie=bad))[0] == 401
    for origin, allowed in [(UI[1], UI[1]), ("http://evil.example", UI[0])]:
        preflight = urllib.request.Request(
            f"{codec_url}/decode", method="OPTIONS", headers={"Origin": origin}
        )
        response = await asyncio.to_thread(urllib.request.urlopen, preflight, timeout=10)
        with response:
            assert response.headers["Access-Control-Allow-Origin"] == allowed
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
    status, body = await asyncio.to_thread(lambda: post(f"{codec_url}/decode", b"{", "s3cret")[:2])
    assert status == 400 and body == b'{"error": "ParseError"}'


@pytest.mark.parametrize(
    "value",
    ["²", "²⁰⁹⁹.abc", "-5.abc", "99999999999999999999999.x", '"1.2"', "1.2.3", "\\x00", "é"],
)
async def test_a_malformed_session_cookie_is_refused_not_a_crash(
    codec_url: str, value: str
) -> None:
    # Raw bytes: a browser (or an attacker) may send what urllib refuses to encode.
    answer = await asyncio.to_thread(
        raw,
        host_port(codec_url),
        b"POST /decode HTTP/1.1\r\nHost: x\r\nCookie: "
        + f"{SESSION_COOKIE}={value}".encode()
        + b"\r\nContent-Length: 0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer
    # And the server still answers.
    assert (await decode(codec_url, "s3cret"))[0] == 200


def host_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("path", ["/decode", "/login"])
async def test_a_negative_or_malformed_content_length_is_refused(codec_url: str, path: str) -> None:
    port = host_port(codec_url)
    for length in (b"-1", b"abc", b"1, 2"):
        answer = await asyncio.to_thread(
            raw,
            port,
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
            b"Content-Length: " + length + b"\r\n\r\n",
        )
        assert answer.split(b" ")[1] == b"400", (length, answer)  # from the HTTP parser


@pytest.mark.parametrize(
    ("path", "auth", "expected"),
    [
        ("/decode", b"Authorization: Bearer s3cret\r\n", b"413"),
        ("/login", b"", b"413"),
        # Unauthenticated: refused from the headers, before any of the body is read.
        ("/decode", b"", b"401"),
    ],
)
async def test_a_huge_body_is_refused_before_it_is_read(
    codec_url: str, path: str, auth: bytes, expected: bytes
) -> None:
    started = time.monotonic()
    answer = await asyncio.to_thread(
        raw,
        host_port(codec_url),
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 999999999999\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 " + expected), answer
    assert time.monotonic() - started < 1  # answered at once, no body sent


async def test_unauthenticated_streaming_gets_401_at_once(codec_url: str) -> None:
    answer = await asyncio.to_thread(
        raw,
        host_port(codec_url),
        b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n0123456789abcdef\r\n",  # and more would follow, forever
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer


async def test_an_authenticated_chunked_body_past_the_limit_is_refused(
    codec_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_BODY", 1000)  # read at request time
    chunk = b"x" * 800
    request = (
        b"POST /decode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"320\r\n" + chunk + b"\r\n") * 2 + b"0\r\n\r\n"
    )
    answer = await asyncio.to_thread(raw, host_port(codec_url), request)
    assert answer.startswith(b"HTTP/1.1 413"), answer


async def test_slow_clients_are_cut_off_and_hold_no_one_up(codec_url: str) -> None:
    port = host_port(codec_url)
    # Headers that never end: the connection is closed after HEADER_SECONDS.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow_headers:
        slow_headers.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\n")
        # Meanwhile, others are served at once.
        assert (await decode(codec_url, "s3cret"))[0] == 200
        closed = await asyncio.to_thread(slow_headers.recv, 100)
        assert closed == b""
    assert 0.5 < time.monotonic() - started < 5
    # A body that never arrives in full: 408 after BODY_SECONDS.
    answer = await asyncio.to_thread(
        raw,
        port,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
        b"Content-Length: 100\r\n\r\n0123456789",
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer
