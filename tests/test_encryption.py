"""Saga data stays private: payload encryption, key rotation, the codec server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToJson
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import TripRequest
from activities.trip import ALL
from temporal_saga import SAGA_STATUS_ATTRIBUTE, EncryptionCodec
from temporal_saga._codec import parse_keys
from temporal_saga._codec_server import make_server
from workflows.trip import BuyTripPackage

from .conftest import ROOT, free_port, temporal_binary

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
PASSPORT = "ZX9876543"
NAME = "Zoltan Secretname"


def test_malformed_keys_are_refused_with_the_reason() -> None:
    assert list(parse_keys(f"old:{KEY_A}, new:{KEY_B}", "env")) == ["old", "new"]
    with pytest.raises(ValueError, match="not valid base64"):
        parse_keys("k:not*base64", "env")
    with pytest.raises(ValueError, match="has 8 bytes; AES-256 needs 32"):
        parse_keys(f"k:{base64.b64encode(b'12345678').decode()}", "env")
    with pytest.raises(ValueError, match="expected 'id:base64key'"):
        parse_keys(KEY_A, "env")


async def test_rotation_keeps_old_payloads_readable() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"passport": "X"}')
    [old] = await EncryptionCodec({"a": b"a" * 32}).encode([plain])
    rotated = EncryptionCodec({"b": b"b" * 32, "a": b"a" * 32})
    assert await rotated.decode([old]) == [plain]
    [new] = await rotated.encode([plain])
    assert new.metadata["encryption-key-id"] == b"b" and b"passport" not in new.data
    with pytest.raises(ValueError, match="unknown key 'a'"):
        await EncryptionCodec({"b": b"b" * 32}).decode([old])


async def buy_on_a_fresh_server(tmp_path: Path, converter: DataConverter) -> bytes:
    """Run one trip saga on a dev server persisting to SQLite; return the files' bytes."""
    tmp_path.mkdir()
    database = tmp_path / "temporal.db"
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_database_filename=str(database),
        data_converter=converter,
        search_attributes=[SAGA_STATUS_ATTRIBUTE],
        dev_server_log_level="error",
    ) as env:
        queue = f"secret-{uuid.uuid4()}"
        with ThreadPoolExecutor(4) as executor:
            async with Worker(
                env.client,
                task_queue=queue,
                workflows=[BuyTripPackage],
                activities=ALL,
                activity_executor=executor,
            ):
                trip = TripRequest(
                    traveller=NAME,
                    passport=PASSPORT,
                    origin="Lisbon",
                    destination="Rome",
                    check_in=date(2027, 5, 1),
                    nights=2,
                )
                await env.client.execute_workflow(
                    BuyTripPackage.run, trip, id=f"trip-{uuid.uuid4()}", task_queue=queue
                )
    return b"".join(p.read_bytes() for p in tmp_path.glob("temporal.db*"))


async def test_with_a_key_no_personal_data_is_stored_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    clear = await buy_on_a_fresh_server(tmp_path / "clear", pydantic_data_converter)
    assert PASSPORT.encode() in clear and NAME.encode() in clear  # the control
    codec = EncryptionCodec({"k1": b"k" * 32})
    encrypted = await buy_on_a_fresh_server(
        tmp_path / "encrypted", dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    )
    assert PASSPORT.encode() not in encrypted and NAME.encode() not in encrypted


def post(url: str, body: bytes, token: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_codec_server_decodes_for_the_token_holder_only() -> None:
    codec = EncryptionCodec({"k1": b"k" * 32})
    port = free_port()
    server = make_server(codec, "s3cret", port=port, origin="http://localhost:8233")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        plain = Payload(metadata={"encoding": b"json/plain"}, data=f'"{PASSPORT}"'.encode())
        sealed = MessageToJson(Payloads(payloads=await codec.encode([plain]))).encode()
        url = f"http://127.0.0.1:{port}/decode"
        status, body = await asyncio.to_thread(post, url, sealed, "s3cret")
        assert status == 200
        [payload] = json.loads(body)["payloads"]
        assert base64.b64decode(payload["data"]).decode() == f'"{PASSPORT}"'
        for token in (None, "wrong"):
            status, body = await asyncio.to_thread(post, url, sealed, token)
            assert status == 401 and PASSPORT.encode() not in body
        preflight = urllib.request.Request(url, method="OPTIONS")
        with urllib.request.urlopen(preflight, timeout=10) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
    finally:
        server.shutdown()


def test_worker_refuses_to_start_with_a_malformed_key() -> None:
    result = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env={
            **os.environ,
            "TEMPORAL_SAGA_KEYS": "k1:not*base64",
            "TEMPORAL_ADDRESS": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not valid base64" in result.stderr and "Traceback" not in result.stderr
