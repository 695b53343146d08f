"""Helpers shared by the tests that run scripted sagas or trip sagas in process."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from activities.models import City, TripRequest
from activities.trip import ALL as TRIP_ACTIVITIES
from temporal_saga import SagaFailed, SagaResult
from workflows.trip import BuyTripPackage

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
    with pytest.raises(WorkflowFailureError) as caught:
        await run_saga(client, task_queue, s)
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
    ``queue`` (default: a fresh one), which it yields."""
    queue = queue or f"trip-{uuid.uuid4()}"
    with ThreadPoolExecutor(4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[BuyTripPackage],
            activities=TRIP_ACTIVITIES,
            activity_executor=executor,
        ):
            yield queue
