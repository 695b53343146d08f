"""Helpers shared by the test modules (which import from here, never from each other)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.converter import PayloadCodec
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ledger import Ledger, Where
from activities.models import City, TripBooking, TripRequest
from activities.trip import ALL as TRIP_ACTIVITIES
from insurer.handler import InsuranceHandler
from insurer.service import INSURER_NAMESPACE
from insurer.setup import ensure as ensure_insurer_endpoint
from temporal_saga import SagaFailed, SagaResult, SagaState
from temporal_saga._protocol import SAGA_STATE_QUERY
from temporal_saga.client import data_converter, state_from_history
from workflows.trip import BuyTripPackage

from .conftest import temporal_cli
from .readme_blocks import marked
from .scripted import (
    JOURNAL,
    BlockSaga,
    HandWrittenParallel,
    PivotBlockSaga,
    ScriptedSaga,
    ScriptedSpec,
    ScriptedStep,
    do_step,
    undo_step,
)

WORKFLOWS = [ScriptedSaga, HandWrittenParallel, BlockSaga, PivotBlockSaga]
ACTIVITIES = [do_step, undo_step]


def spec(*steps: ScriptedStep, **options: object) -> ScriptedSpec:
    return ScriptedSpec(run=str(uuid.uuid4()), steps=list(steps), **options)  # type: ignore[arg-type]


async def run_saga(client: Client, task_queue: str, s: ScriptedSpec) -> SagaResult:
    return await client.execute_workflow(
        ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
    )


async def fail_saga(client: Client, task_queue: str, s: ScriptedSpec) -> SagaFailed:
    return await saga_failure(await start(client, task_queue, s))


async def saga_failure(handle: WorkflowHandle[Any, Any]) -> SagaFailed:
    """The saga's failure, which its workflow must end with."""
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None, f"not a saga failure: {caught.value.cause!r}"
    return failure


def did(s: ScriptedSpec, kind: str) -> set[str]:
    """The steps whose `kind` ("do"/"undo") activity succeeded at least once."""
    return {e.step for e in JOURNAL[s.run] if e.kind == kind and e.ok}


def entry(s: ScriptedSpec, kind: str, step: str) -> tuple[float, float]:
    [found] = [e for e in JOURNAL[s.run] if e.kind == kind and e.step == step and e.ok]
    return found.started, found.ended


# Personal data the encryption tests look for in what Temporal stores.
NAME = "Zoltan Secretname"
PASSPORT = "ZX9876543"


def secret_trip(destination: City) -> TripRequest:
    """A trip for NAME with PASSPORT, from Lisbon."""
    return TripRequest(
        traveller=NAME,
        passport=PASSPORT,
        origin="Lisbon",
        destination=destination,
        check_in=date(2027, 5, 1),
        nights=2,
    )


@contextlib.asynccontextmanager
async def trip_worker_in_process(client: Client, queue: str | None = None) -> AsyncIterator[str]:
    """A worker for the trip saga in this process (set ``TRIP_DATA_DIR`` first) on
    ``queue`` (default: a fresh one), which it yields, and the insurer's."""
    queue = queue or f"trip-{uuid.uuid4()}"
    address = client.service_client.config.target_host
    # The insurer's worker too (another team's, in its namespace: the same payload
    # converter and codec as the trip's, to read what the saga sends it).
    insurer = await Client.connect(
        address, namespace=INSURER_NAMESPACE, data_converter=client.data_converter
    )
    insurer_queue = f"insurer-{uuid.uuid4()}"
    await asyncio.to_thread(ensure_insurer_endpoint, address, task_queue=insurer_queue)
    with ThreadPoolExecutor(4) as executor:
        async with (
            Worker(
                client,
                task_queue=queue,
                workflows=[BuyTripPackage],
                activities=TRIP_ACTIVITIES,
                activity_executor=executor,
            ),
            Worker(insurer, task_queue=insurer_queue, nexus_service_handlers=[InsuranceHandler()]),
        ):
            yield queue


# --- moved from the test modules that used to import each other ---


UI_URL = "https://ui.example:9443/"


WEB_UI = re.compile(
    r"Web UI: http://localhost:8233/namespaces/default/workflows/(order-[0-9a-f]{8})/[0-9a-f-]{36}"
)


class NoKeyCodec(PayloadCodec):
    """What a reader without the encryption key has: nothing decodes but public text."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        raise ValueError("no key for these payloads")


async def start(client: Client, task_queue: str, s: ScriptedSpec) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
    )


async def ends_cancelled(handle: WorkflowHandle[Any, Any]) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, CancelledError), caught.value.cause
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED


async def wait_for(
    handle: WorkflowHandle[Any, Any], check: Callable[[SagaState], bool]
) -> SagaState:
    """Poll the saga_state query until ``check`` holds (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
            if check(state):
                return state
        except (WorkflowQueryFailedError, RPCError):
            pass  # not started yet
        assert time.monotonic() < deadline, "the saga never got there"
        await asyncio.sleep(0.05)


async def rebuild(client: Client, workflow_id: str, *, key: bool = True) -> SagaState:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    converter = data_converter(from_env=False) if key else data_converter(codec=NoKeyCodec())
    return await state_from_history(history.events, converter, workflow_id=workflow_id)


def trip(traveller: str, **changes: object) -> TripRequest:
    fields: dict[str, object] = {
        "traveller": traveller,
        "passport": "P1234567",
        "origin": "Lisbon",
        "destination": "Venice",
        "check_in": date(2027, 6, 1),
        "nights": 2,
        "tickets": 2,
    }
    return TripRequest.model_validate(fields | changes)


async def buy(client: Client, queue: str, request: TripRequest) -> TripBooking:
    return await client.execute_workflow(
        BuyTripPackage.run, request, id=f"trip-{uuid.uuid4()}", task_queue=queue
    )


SERVICES = ("airline", "hotel", "attractions", "insurer", "payments")


def active(services: Where, traveller: str) -> dict[str, int]:
    """How many bookings in force the traveller holds at each service."""
    return {name: len(Ledger(name, "", services).active(holder=traveller)) for name in SERVICES}


def held(**bookings: int) -> dict[str, int]:
    """What :func:`active` returns for a traveller holding ``bookings`` (service: count),
    and nothing elsewhere."""
    assert set(bookings) <= set(SERVICES), bookings
    return {name: bookings.get(name, 0) for name in SERVICES}


def cli(
    env: WorkflowEnvironment, *args: str, address: str | None = None, namespace: str = "default"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temporal_saga", *args],
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": address or env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": namespace,
            "TEMPORAL_UI_URL": UI_URL,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_from_the_cli(env: WorkflowEnvironment, task_queue: str, spec_file: Path) -> str:
    """Start a DeclarativeSaga with the temporal CLI, its input the spec file; its id."""
    workflow_id = f"declarative-{spec_file.stem}-{uuid.uuid4()}"
    started = temporal_cli(
        env,
        "workflow",
        "start",
        "--type",
        "DeclarativeSaga",
        "--task-queue",
        task_queue,
        "--workflow-id",
        workflow_id,
        "--input-file",
        str(spec_file),
    )
    assert started.returncode == 0, started.stderr
    return workflow_id


def write_first_saga(folder: Path) -> None:
    """The README's shop.py and run_shop.py, as they stand."""
    for name in ("shop.py", "run_shop.py"):
        (folder / name).write_text(marked(f"file {name}"))


def check_first_saga_output(printed: str) -> str:
    """Compare with the output the README shows; return the order's workflow id."""
    expected = marked("output of run_shop.py").splitlines()
    lines = printed.splitlines()
    assert lines[:-1] == expected[:-1], printed
    link = WEB_UI.fullmatch(lines[-1])
    assert link is not None and WEB_UI.fullmatch(expected[-1]), lines[-1]
    return link[1]


async def starts_past_the_long_history_cap(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Where the saga's history shows it started an activity beyond the cap for long
    histories: once a workflow task starts past 2,000 events, it may schedule new
    activities only while fewer than 40 are in flight, and never brings them past 40.
    Returns a line per violation (empty: the cap held)."""
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    closed = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    }
    pending, task_started, batch_start, wrong = 0, 0, None, []
    for event in (await handle.fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = event.event_id
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            batch_start = pending if task_started > 2000 else None
        elif event.event_type == scheduled:
            pending += 1
            if batch_start is not None and pending > max(40, batch_start):
                wrong.append(f"event {event.event_id}: {pending} in flight, {batch_start} before")
        elif event.event_type in closed:
            pending -= 1
    return wrong
