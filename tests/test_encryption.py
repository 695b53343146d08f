"""Saga data stays private: payload encryption, key rotation, the codec server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.testing import WorkflowEnvironment

from activities.models import City, TripBooking, TripRequest
from insurer.service import INSURER_NAMESPACE
from temporal_saga import SagaStatus
from temporal_saga._protocol import SAGA_STATUS_ATTRIBUTE, PublicText
from temporal_saga.client import SagaPlugin, data_converter, load_state, render_trace
from temporal_saga.encryption import EncryptionCodec, audit_history
from temporal_saga.encryption._audit import HistoryAudit
from temporal_saga.encryption._codec import parse_keys
from workflows.trip import BuyTripPackage

from .conftest import ROOT, WorkerFactory, server_address, temporal_binary
from .helpers import ACTIVITIES, NAME, PASSPORT, secret_trip, trip_worker_in_process
from .scripted import NotedSaga

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


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


@dataclasses.dataclass
class Stored:
    """What a run of trip sagas left in the server's files and shows a keyless reader."""

    files: bytes
    refusal: str  # the failed saga's message
    invalid: str  # the message of a saga started with a bad request
    trace_without_key: str  # the failed saga's current details, read with no key
    rebuilt_without_key: str  # its trace as `show` prints it on a machine with no key
    audit: HistoryAudit  # its history's payloads, as stored
    audit_cli: subprocess.CompletedProcess[str]  # python -m temporal_saga audit <its id>


async def buy_on_a_fresh_server(tmp_path: Path, converter: DataConverter) -> Stored:
    """Buy two Venice trips (the second finds no room) and start one with a bad city,
    on a dev server persisting to SQLite."""
    tmp_path.mkdir()
    database = tmp_path / "temporal.db"
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_database_filename=str(database),
        data_converter=converter,
        plugins=[SagaPlugin()],
        search_attributes=[SAGA_STATUS_ATTRIBUTE],
        dev_server_log_level="error",
        dev_server_extra_args=["--namespace", INSURER_NAMESPACE],  # the insurer's
    ) as env:
        trip = secret_trip("Venice")
        bad = trip.model_dump(mode="json") | {"origin": NAME}
        async with trip_worker_in_process(env.client) as queue:
            await env.client.execute_workflow(
                BuyTripPackage.run, trip, id=f"trip-{uuid.uuid4()}", task_queue=queue
            )
            refused = await env.client.start_workflow(
                BuyTripPackage.run, trip, id=f"trip-{uuid.uuid4()}", task_queue=queue
            )
            with pytest.raises(WorkflowFailureError) as refusal:
                await refused.result()
            with pytest.raises(WorkflowFailureError) as invalid:
                await env.client.execute_workflow(
                    "BuyTripPackage", bad, id=f"trip-{uuid.uuid4()}", task_queue=queue
                )
            # What the Web UI shows without the codec server: a client with no key.
            keyless = await Client.connect(
                env.client.service_client.config.target_host,
                data_converter=data_converter(from_env=False),
            )
            metadata = await keyless.get_workflow_handle(refused.id).query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            state, source = await load_state(keyless.get_workflow_handle(refused.id))
            audit = audit_history((await refused.fetch_history()).events)
            audit_cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "temporal_saga", "audit", refused.id],
                env={**os.environ, "TEMPORAL_ADDRESS": server_address(env)},
                capture_output=True,
                text=True,
                timeout=60,
            )
    return Stored(
        files=b"".join(p.read_bytes() for p in tmp_path.glob("temporal.db*")),
        refusal=str(refusal.value.cause),
        invalid=str(invalid.value.cause),
        trace_without_key=metadata.current_details,
        rebuilt_without_key=f"{render_trace(state)}\n(from the {source})",
        audit=audit,
        audit_cli=audit_cli,
    )


async def test_with_a_key_no_personal_data_is_stored_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEMPORAL_SAGA_KEYS", raising=False)
    monkeypatch.delenv("TEMPORAL_SAGA_KEY_FILE", raising=False)
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    clear = await buy_on_a_fresh_server(tmp_path / "clear", data_converter())
    assert PASSPORT.encode() in clear.files and NAME.encode() in clear.files  # the control
    assert clear.audit.in_clear and clear.audit_cli.returncode == 5
    assert "IN CLEAR: event 1, workflow_execution_started_event_attributes.input" in (
        clear.audit_cli.stdout
    )

    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services-encrypted"))
    codec = EncryptionCodec({"k1": b"k" * 32})
    stored = await buy_on_a_fresh_server(tmp_path / "encrypted", data_converter(codec=codec))
    assert PASSPORT.encode() not in stored.files and NAME.encode() not in stored.files
    # The audit an auditor runs: every payload with content encrypted, bar public text.
    assert stored.audit_cli.returncode == 0, stored.audit_cli.stdout + stored.audit_cli.stderr
    assert not stored.audit.in_clear
    assert {p.key_id for p in stored.audit.payloads if p.kind == "encrypted"} == {"k1"}
    public = {p.text for p in stored.audit.payloads if p.kind == "public"}
    assert public == {
        "book plane ticket",
        "book hotel room",
        "buy tourist tickets",
        "cancel plane ticket booking",
        "cancel tourist ticket reservations",
        "check the SagaStatus search attribute",  # the local activity's summary
    }
    # The SDK's own bookkeeping: the insurer's patch marker (trip-insurer-nexus), the
    # check's patch marker and local activity marker.
    assert [p.field for p in stored.audit.payloads if p.kind == "sdk"] == [
        "marker_recorded_event_attributes.details[patch-data].payloads[0]",
        "marker_recorded_event_attributes.details[patch-data].payloads[0]",
        "marker_recorded_event_attributes.details[data].payloads[0]",
    ]
    # The operators' view stays readable without the key: step names (the
    # activities' summaries), error messages and the trace.
    for public in ("book hotel room", "cancel plane ticket booking", "no available hotel"):
        assert public.encode() in stored.files, public
    assert "no available hotel rooms" in stored.refusal
    assert stored.trace_without_key.endswith("❌ end saga (no available hotel rooms)")
    # `show` without the key: the query's answer is encrypted, the history is not all.
    # (A step that never started, here the insurance and the payment's two, leaves no
    # trace in history.)
    expected = stored.trace_without_key
    for never_started in ("buy travel insurance", "charge card", "payment confirmed"):
        line = f"⏭️ {never_started} (skipped)\n"
        assert line in expected
        expected = expected.replace(line, "")
    assert stored.rebuilt_without_key == f"{expected}\n(from the history)"
    # A validation error names the field and the rule, never the input it refused.
    assert "origin: Input should be 'Lisbon'" in stored.invalid and NAME not in stored.invalid


@pytest.mark.parametrize(
    "command",
    [
        ["worker.py"],
        [
            "starter.py",
            "--traveller",
            "A",
            "--passport",
            "AB12345",
            "--origin",
            "Lisbon",
            "--destination",
            "Rome",
            "--check-in",
            "2027-06-01",
            "--nights",
            "2",
        ],
        ["-m", "temporal_saga", "show", "trip-x"],
        ["-m", "temporal_saga", "codec-server"],
    ],
    ids=["worker", "starter", "show", "codec-server"],
)
def test_every_entry_point_refuses_a_malformed_key_in_one_line(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={
            **os.environ,
            "TEMPORAL_SAGA_KEYS": "k1:not*base64",
            "TEMPORAL_SAGA_CODEC_TOKEN": "t",
            "TEMPORAL_ADDRESS": "127.0.0.1:1",  # never reached: the key is checked first
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "TEMPORAL_SAGA_KEYS: key 'k1' is not valid base64" in result.stderr
    assert "Traceback" not in result.stderr and "cannot reach" not in result.stderr


async def test_after_a_rotation_old_sagas_stay_readable_and_new_ones_use_the_new_key(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    old, new = {"2026-11": os.urandom(32)}, {"2027-01": os.urandom(32)}

    async def client(keys: dict[str, bytes] | None) -> Client:
        return await Client.connect(
            env.client.service_client.config.target_host,
            namespace=env.client.namespace,
            data_converter=data_converter(codec=EncryptionCodec(keys))
            if keys
            else data_converter(from_env=False),
            plugins=[SagaPlugin()],
        )

    async def buy(through: Client, destination: City, queue: str) -> str:
        async with trip_worker_in_process(through, queue):
            handle = await through.start_workflow(
                BuyTripPackage.run,
                secret_trip(destination),
                id=f"trip-{uuid.uuid4()}",
                task_queue=queue,
            )
            await handle.result()
        return handle.id

    async def key_id(workflow_id: str) -> bytes:
        history = await (await client(None)).get_workflow_handle(workflow_id).fetch_history()
        [payload] = history.events[0].workflow_execution_started_event_attributes.input.payloads
        return payload.metadata["encryption-key-id"]

    queue = f"rotation-{uuid.uuid4()}"
    before = await buy(await client(old), "Rome", queue)
    rotated = await client(new | old)  # the new key first: it encrypts
    after = await buy(rotated, "Paris", queue)
    assert await key_id(before) == b"2026-11" and await key_id(after) == b"2027-01"
    booking = await rotated.get_workflow_handle(before, result_type=TripBooking).result()
    assert booking.flight.passenger == NAME
    # A worker with the rotated keys replays the old saga (to answer its query): it
    # decodes the history's old payloads with the old key.
    async with trip_worker_in_process(rotated, queue):
        state, source = await load_state(rotated.get_workflow_handle(before))
    assert source == "query" and state.status is SagaStatus.SUCCEEDED
    # Dropping the old key too early makes old payloads unreadable, and says why.
    with pytest.raises(ValueError, match="unknown key '2026-11'"):
        await (await client(new)).get_workflow_handle(before).result()


async def test_a_step_opts_in_to_a_public_note_on_its_result(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[NotedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            NotedSaga.run, run, id=f"noted-{run}", task_queue=task_queue
        )
        result = await handle.result()
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    lines = [line for line in metadata.current_details.splitlines() if line.startswith("✔️")]
    assert lines == [
        "✔️ a (got do a)",
        "✔️ b (note failed: ZeroDivisionError)",  # the error's type only, never its text
        "✔️ c",  # no note: nothing of the result
        "✔️ d (pivot: no way back; DO D)",
        "✔️ end saga (success)",
    ]
    assert result.state.steps[0].note == "got do a"


class Compress(PayloadCodec):
    """A codec of a user's own, not encryption: public text must bypass it too."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": b"binary/zlib"}, data=zlib.compress(p.SerializeToString())
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload.FromString(zlib.decompress(p.data)) for p in payloads]


async def test_public_text_bypasses_any_codec_and_the_rest_goes_through_it() -> None:
    converter = data_converter(codec=Compress())
    trip = secret_trip("Rome")
    public, private = await converter.encode([PublicText("book plane ticket"), trip])
    assert public.metadata["temporal-saga-public"] == b"1"
    assert public.data == b'"book plane ticket"'
    assert private.metadata["encoding"] == b"binary/zlib"
    assert await converter.decode([public, private], [str, TripRequest]) == [
        "book plane ticket",
        trip,
    ]
