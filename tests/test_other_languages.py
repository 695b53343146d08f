"""Sagas across languages: the trip saga rents its car from a Node.js worker.

The car-rental service (``services/car-rental``: ``bookCar``, ``cancelCar``, written
with the TypeScript SDK's packages) runs as its own process on the ``car-rental``
queue, beside ``worker.py``; the saga is the Python workflow. Each test checks the
services' ledgers, Node's included, against what the saga says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from temporal_saga import SagaFailed, SagaResult, SagaStatus
from temporal_saga.client import SagaPlugin, data_converter, render_trace, retry_step
from temporal_saga.encryption import EncryptionCodec, new_key
from temporal_saga.encryption._codec import parse_keys
from temporal_saga.testing import fake
from workflows.trip import BuyTripPackage

from .conftest import ROOT, WorkerFactory, running_worker_py, server_address
from .event_sagas import ShopInput, ShopSaga, refund, release, reserve, ship
from .helpers import active, buy, held, start_from_the_cli, trip, wait_for

CAR_RENTAL = ROOT / "services" / "car-rental"
NODE = shutil.which("node")
_MISSING = (
    "no node"
    if NODE is None
    else "no services/car-rental/node_modules (npm ci --prefix services/car-rental)"
    if not (CAR_RENTAL / "node_modules").is_dir()
    else None
)
# On a machine without Node the example's other-language service cannot run; in CI
# it must (.ci/run installs it), so there a missing Node fails instead of skipping.
if _MISSING and not os.environ.get("CI"):
    pytestmark = pytest.mark.skip(reason=f"the car-rental service needs Node.js: {_MISSING}")


def cars(services: Path, renter: str) -> dict[str, int]:
    """The car-rental ledger's rows for ``renter``, counted by status."""
    found: dict[str, dict[str, str]] = {}
    ledger = services / "car-rental.jsonl"
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        row = json.loads(line)
        found[row["key"]] = {**found.get(row["key"], {}), **row}
    counts: dict[str, int] = {}
    for row in found.values():
        if row.get("holder") == renter:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


@contextlib.contextmanager
def car_rental(
    env: WorkflowEnvironment, services: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The Node.js car-rental worker, serving until the block ends."""
    assert _MISSING is None, _MISSING
    worker = subprocess.Popen(
        [str(NODE), "worker.js"],
        cwd=CAR_RENTAL,
        env={**os.environ, "TEMPORAL_ADDRESS": server_address(env), "TRIP_DATA_DIR": str(services)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"serving task queue" not in log.read_bytes():
        assert worker.poll() is None, f"the car-rental worker exited: {log.read_text()}"
        assert time.monotonic() < deadline, (
            f"the car-rental worker did not start: {log.read_text()}"
        )
        time.sleep(0.05)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)


async def running(
    handle: WorkflowHandle[Any, Any], activity_type: str, *, heartbeating: bool = False
) -> bool:
    """Whether an attempt of ``activity_type`` runs now in the saga (and, with
    ``heartbeating``, has heartbeated)."""
    pending = (await handle.describe()).raw_description.pending_activities
    field = "last_heartbeat_time" if heartbeating else "last_started_time"
    return any(p.activity_type.name == activity_type and p.HasField(field) for p in pending)


@pytest.fixture
def car_worker(env: WorkflowEnvironment, services: Path, tmp_path: Path) -> Iterator[None]:
    services.mkdir(parents=True, exist_ok=True)
    with car_rental(env, services, tmp_path / "car-rental.log"):
        yield


async def test_a_trip_rents_its_car_from_the_node_service(
    client: Client, trip_worker: str, car_worker: None, services: Path
) -> None:
    booking = await buy(client, trip_worker, trip("Ana", destination="Rome", car=True))
    assert booking.car is not None and booking.car.booking_id.startswith("CR-")
    assert booking.car.renter == "Ana" and booking.car.days == 2  # typed from Node's JSON
    assert cars(services, "Ana") == {"BOOKED": 1}
    assert active(services, "Ana") == held(airline=1, hotel=1, attractions=1, payments=1)


async def test_a_python_step_fails_and_the_node_step_is_undone_by_node(
    client: Client, trip_worker: str, car_worker: None, services: Path
) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await buy(client, trip_worker, trip("Bob", car=True, faults={"hotel": "down"}))
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.reason == "hotel is unavailable"
    assert failure.state.step("rent a car").status.value == "COMPENSATED"
    assert "✔️ cancel car rental" in render_trace(failure.state)
    assert cars(services, "Bob") == {"CANCELLED": 1}
    assert active(services, "Bob") == held()


async def test_the_node_step_fails_and_the_python_steps_are_undone(
    client: Client, trip_worker: str, car_worker: None, services: Path
) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await buy(client, trip_worker, trip("Cid", car=True, faults={"car-rental": "down"}))
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None
    assert failure.failed_step == "rent a car" and failure.reason == "car-rental is unavailable"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert cars(services, "Cid") == {}  # never booked
    assert active(services, "Cid") == held()


async def test_a_node_refusal_to_undo_waits_for_a_human(
    client: Client, trip_worker: str, car_worker: None, services: Path
) -> None:
    """The Node service refuses the cancel for good: the Python saga waits, and an
    operator's retry with a new argument has Node undo it after all."""
    request = trip("Dan", car=True, faults={"hotel": "down", "car-rental": "no_refund"})
    handle = await client.start_workflow(
        BuyTripPackage.run, request, id=f"trip-{uuid.uuid4()}", task_queue=trip_worker
    )
    state = await wait_for(handle, lambda s: s.status is SagaStatus.NEEDS_HUMAN)
    assert state.needs_human == ["rent a car"]
    assert "❌ cancel car rental (car-rental: refund refused after pick-up)" in render_trace(state)
    fixed = request.car_rental().model_copy(update={"fault": None}).model_dump(mode="json")
    assert await retry_step(handle, "rent a car", arg=fixed) == "cancel car rental: compensated"
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert cars(services, "Dan") == {"CANCELLED": 1}


async def test_the_node_worker_killed_mid_saga_and_restarted_leaves_it_coherent(
    env: WorkflowEnvironment, client: Client, trip_worker: str, services: Path, tmp_path: Path
) -> None:
    services.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "car-rental.log"
    slow = trip("Eva", destination="Paris", car=True, faults={"car-rental": "slow"})
    with car_rental(env, services, log) as node:
        handle = await client.start_workflow(
            BuyTripPackage.run, slow, id=f"trip-{uuid.uuid4()}", task_queue=trip_worker
        )
        deadline = time.monotonic() + 30
        while not await running(handle, "bookCar"):
            assert time.monotonic() < deadline, "the car step never started"
            await asyncio.sleep(0.05)
        while not await running(handle, "bookCar", heartbeating=True):  # inside bookCar
            assert time.monotonic() < deadline, "the car step never heartbeated"
            await asyncio.sleep(0.05)
        node.send_signal(signal.SIGKILL)
        node.wait()
    with car_rental(env, services, log):  # the attempt times out, the next one books
        booking = await handle.result()
    assert booking.car is not None
    assert cars(services, "Eva") == {"BOOKED": 1}  # once, whatever the kill interrupted
    assert active(services, "Eva") == held(airline=1, hotel=1, attractions=1, payments=1)


async def test_a_declarative_saga_across_both_workers_from_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, trip_worker: str, car_worker: None, services: Path
) -> None:
    workflow_id = start_from_the_cli(env, trip_worker, ROOT / "workflows" / "trip_spec_car.json")
    result = await client.get_workflow_handle(workflow_id, result_type=SagaResult).result()
    assert result.results["rent a car"]["booking_id"].startswith("CR-")
    assert result.results["book plane ticket"]["booking_id"].startswith("FL-")
    assert cars(services, "Nico") == {"BOOKED": 1}


async def test_an_encrypted_saga_shares_its_codec_with_the_node_service(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python and Node encrypt with the same keys: the Node step reads its argument,
    Python reads its result, and Temporal stores neither in clear."""
    entry = new_key("shared")
    monkeypatch.setenv("TEMPORAL_SAGA_KEYS", entry)  # worker.py and Node inherit it
    services = tmp_path / "services"
    services.mkdir()
    client = await Client.connect(
        server_address(env),
        data_converter=data_converter(codec=EncryptionCodec(parse_keys(entry, "test"))),
        plugins=[SagaPlugin()],
    )
    queue = f"encrypted-{uuid.uuid4()}"
    with (
        car_rental(env, services, tmp_path / "car-rental.log"),
        running_worker_py(env, queue, services, tmp_path / "worker.log"),
    ):
        assert "payloads encrypted (key 'shared')" in (tmp_path / "car-rental.log").read_text()
        fay = await client.start_workflow(
            BuyTripPackage.run,
            trip("Fay", destination="Rome", car=True),
            id=f"trip-{uuid.uuid4()}",
            task_queue=queue,
        )
        booking = await fay.result()
        with pytest.raises(WorkflowFailureError):
            await buy(client, queue, trip("Gil", car=True, faults={"hotel": "down"}))
    assert booking.car is not None and booking.car.renter == "Fay"
    assert cars(services, "Fay") == {"BOOKED": 1} and cars(services, "Gil") == {"CANCELLED": 1}
    # What Temporal stored: the car step's input and result, encrypted.
    stored = b"".join(e.SerializeToString() for e in (await fay.fetch_history()).events)
    assert b"bookCar" in stored and b"renter" not in stored and b"Fay" not in stored


async def test_a_node_service_sends_an_event_and_reads_the_answer(
    env: WorkflowEnvironment, worker: WorkerFactory, task_queue: str
) -> None:
    assert _MISSING is None, _MISSING
    shop = [
        fake(reserve, returns="reserved"),
        fake(release),
        fake(refund),
        fake(ship, returns=lambda amount: f"shipped for {amount}"),
    ]

    def node_sends(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NODE), "send_event.js", *args],
            cwd=CAR_RENTAL,
            env={**os.environ, "TEMPORAL_ADDRESS": server_address(env)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    async with worker(workflows=[ShopSaga], activities=shop):
        handle = await env.client.start_workflow(
            ShopSaga.run, ShopInput(), id=f"shop-{uuid.uuid4()}", task_queue=task_queue
        )
        await wait_for(handle, lambda s: s.step("payment confirmed").note is not None)
        refused = await asyncio.to_thread(node_sends, handle.id, "parcel")
        assert refused.returncode == 1
        assert refused.stderr.startswith("refused: saga 'shop' waits for no 'parcel' event")
        payment = json.dumps({"amount": 120, "reference": "pay-7"})
        sent = await asyncio.to_thread(node_sends, handle.id, "payment", payment, "--id", "p-7")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == "taken by step 'payment confirmed': 'payment'\n"
        assert (await handle.result())["shipped"] == "shipped for 120"
