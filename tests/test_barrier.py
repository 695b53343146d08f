"""The barrier (DESIGN section 10) on real SQLite and PostgreSQL: each hazard, then races.

A step's effect (a booking) and its compensation (its cancel) run under the barrier,
each in one transaction with the barrier's record. Whatever the order, the repeats and
the races, a step ends booked once, or booked and cancelled once, or never booked:
never booked behind its compensation's back.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from temporal_saga import SagaFailed, StepStatus
from temporal_saga.barrier import CompensatedFirst, create_table, guarded, guarded_async, prune
from temporal_saga.barrier._barrier import StepKey, _sql

from .conftest import WorkerFactory

with workflow.unsafe.imports_passed_through():
    from .barrier_work import (
        POSTGRES,
        Room,
        RoomSaga,
        book,
        book_room,
        cancel,
        cancel_room,
        connect,
        prepare,
        rows,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The service's database, SQLite or PostgreSQL, with its tables."""
    if request.param == "sqlite":
        where = str(tmp_path / "service.db")
    else:
        from .postgres import new_database

        where = POSTGRES + new_database(request.getfixturevalue("postgres"))
    prepare(where)
    return where


def key(step: str, *, compensation: bool = False) -> StepKey:
    return StepKey("wf", "run", step, compensation)


def records(db: str) -> dict[tuple[str, str], str]:
    """The barrier's rows: (step, phase) -> the phase that wrote it."""
    found = rows(db, "SELECT step, phase, origin FROM saga_barrier")
    return {(str(step), str(phase)): str(origin) for step, phase, origin in found}


def bookings(db: str) -> dict[str, str]:
    return {str(step): str(status) for step, status in rows(db, "SELECT * FROM bookings")}


def test_a_retried_step_books_once_and_gets_the_first_result(db: str) -> None:
    assert book(db, key("s/a")) == "booked s/a"
    assert book(db, key("s/a")) == "booked s/a"  # the retry: the recorded result
    assert bookings(db) == {"s/a": "BOOKED"}


def test_a_compensation_of_a_step_that_never_ran_does_nothing_and_blocks_it(db: str) -> None:
    cancel(db, key("s/a", compensation=True))  # nothing to undo: succeeds
    with pytest.raises(CompensatedFirst, match="compensated before this attempt ran"):
        book(db, key("s/a"))  # the late attempt: does nothing, fails for good
    assert bookings(db) == {}
    assert CompensatedFirst("x").non_retryable


def test_a_compensation_undoes_once(db: str) -> None:
    book(db, key("s/a"))
    cancel(db, key("s/a", compensation=True))
    cancel(db, key("s/a", compensation=True))  # delivered twice: once
    assert bookings(db) == {"s/a": "CANCELLED"}
    assert book(db, key("s/a")) == "booked s/a"  # a retry after all that: no new booking
    assert bookings(db) == {"s/a": "CANCELLED"}


def test_a_failed_effect_leaves_no_record_so_its_retry_runs(db: str) -> None:
    conn = connect(db)

    def fails() -> None:
        conn.execute("INSERT INTO bookings VALUES ('s/a', 'BOOKED')")
        raise RuntimeError("the service fell over")

    with pytest.raises(RuntimeError), conn:
        guarded(conn, fails, key=key("s/a"))
    conn.close()
    assert records(db) == {} and bookings(db) == {}
    assert book(db, key("s/a")) == "booked s/a"


def test_prune_deletes_only_old_records(db: str) -> None:
    book(db, key("s/a"))
    conn = connect(db)
    with conn:
        create_table(conn)  # idempotent
        assert prune(conn, older_than=timedelta(days=30)) == 0
        month_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=31)
        conn.execute(_sql(conn, "UPDATE saga_barrier SET created_at = ?"), (month_ago,))
        assert prune(conn, older_than=timedelta(days=30)) == 1
    conn.close()


def _at(moment: float) -> None:
    """Wait until ``moment`` (time.time()): both processes start the race together."""
    time.sleep(max(0.0, moment - time.time()))


def _forwards(db: str, steps: list[str], start: float) -> list[str]:
    _at(start)
    outcomes = []
    for step in steps:
        try:
            book(db, key(step))
            outcomes.append("forward ran")
        except CompensatedFirst:
            outcomes.append("forward refused")
    return outcomes


def _compensations(db: str, steps: list[str], start: float) -> None:
    _at(start)
    for step in steps:
        cancel(db, key(step, compensation=True))


def test_forwards_race_their_compensations_from_two_processes(db: str) -> None:
    """Each step's forward and its compensation run in two processes at once: each
    step ends booked and cancelled, or never booked; never booked after its
    compensation, never cancelled twice."""
    steps = [f"s/{i}" for i in range(300)]
    with ProcessPoolExecutor(2) as pool:
        start = time.time() + 1  # both processes up by then
        forwards = pool.submit(_forwards, db, steps, start)
        # From opposite ends: early steps are booked before their compensation comes,
        # late ones compensated before their forward comes, and they race in between.
        compensations = pool.submit(_compensations, db, steps[::-1], start)
        outcomes, _ = forwards.result(timeout=300), compensations.result(timeout=300)
    booked, written = bookings(db), records(db)
    counts = {"booked, then undone": 0, "never booked": 0}
    for step, outcome in zip(steps, outcomes, strict=True):
        assert written[(step, "compensation")] == "compensation"
        if written[(step, "forward")] == "forward":
            assert outcome == "forward ran" and booked[step] == "CANCELLED", step
            counts["booked, then undone"] += 1
        else:  # the compensation came first: the forward did nothing
            assert outcome == "forward refused" and step not in booked, step
            counts["never booked"] += 1
    assert sum(counts.values()) == len(steps), counts  # (each order alone: tests above)
    kind = "PostgreSQL" if db.startswith(POSTGRES) else "SQLite"
    print(f"race of {len(steps)} steps on {kind}: {counts}")


async def test_a_zombie_attempt_after_the_compensation_books_nothing(
    client: Client, worker: WorkerFactory, task_queue: str, db: str
) -> None:
    """The step times out while its attempt still runs (it reaches the database after
    2 s): the saga compensates it (nothing to undo yet), then the attempt arrives and
    the barrier lets it do nothing."""
    async with worker(workflows=[RoomSaga], activities=[book_room, cancel_room]):
        handle = await client.start_workflow(
            RoomSaga.run,
            Room(db=str(db), delay=2),
            id=f"room-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        failure = SagaFailed.from_error(caught.value)
        assert failure is not None
        step = failure.state.step("book room")
        assert step.uncertain and step.status is StepStatus.COMPENSATED
        # The zombie attempt reaches the database after the compensation: refused.
        await asyncio.sleep(2.5)  # the attempt's own 2 s, and then some
    assert bookings(db) == {}
    origins = {phase: origin for (_, phase), origin in records(db).items()}
    assert origins == {"compensation": "compensation", "forward": "compensation"}


async def test_attempts_race_their_compensations_on_two_worker_processes(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path, db: str
) -> None:
    """Through Temporal: 60 sagas whose one step's attempt reaches the database
    between 0.9 and 4 s, around the step's 1 s timeout, on two worker processes.
    Those that timed out are compensated at once, often by the other worker while the
    attempt still runs: each saga ends booked (it succeeded), or booked then undone,
    or never booked; never booked behind a failed saga."""
    trace = tmp_path / "trace"
    workers = [_worker(env, task_queue, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        rng = random.Random(7)
        handles = [
            await client.start_workflow(
                RoomSaga.run,
                Room(db=db, delay=rng.uniform(0.9, 4.0), trace=str(trace)),
                id=f"room-{n}-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            for n in range(60)
        ]
        succeeded = set()
        for handle in handles:
            try:
                await asyncio.wait_for(handle.result(), timeout=120)
                succeeded.add(handle.id)
            except WorkflowFailureError:
                pass
        await asyncio.sleep(4)  # the last attempts that timed out reach the database
    finally:
        for worker in workers:
            worker.kill()
    booked = {step.partition(":")[0]: status for step, status in bookings(db).items()}
    ran: dict[tuple[str, str], str] = {}  # (workflow, phase) -> process id
    for line in trace.read_text().splitlines():
        phase, workflow_id, pid = line.split()
        ran[(workflow_id, phase)] = pid
    counts = {"succeeded, booked": 0, "booked, then undone": 0, "never booked": 0}
    across = 0  # sagas whose attempt and compensation ran in different processes
    for handle in handles:
        status = booked.get(handle.id)
        if handle.id in succeeded:
            assert status == "BOOKED", handle.id
            counts["succeeded, booked"] += 1
            continue
        assert status in ("CANCELLED", None), (handle.id, status)
        counts["never booked" if status is None else "booked, then undone"] += 1
        attempt, undo = ran[(handle.id, "forward")], ran[(handle.id, "compensation")]
        across += attempt != undo
    assert counts["booked, then undone"] and counts["never booked"], counts  # both orders
    assert across > 0, ran
    kind = "PostgreSQL" if db.startswith(POSTGRES) else "SQLite"
    print(f"two workers, 60 sagas on {kind}: {counts}; {across} undone by the other process")


async def test_the_async_guard_keeps_the_same_rules_on_psycopg(postgres: str) -> None:
    import psycopg

    from .postgres import new_database

    conninfo = new_database(postgres)
    prepare(POSTGRES + conninfo)
    ran: list[str] = []

    async def guard(step: str, *, compensation: bool = False) -> object:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:

            async def effect() -> str:
                ran.append(f"{'undo' if compensation else 'do'} {step}")
                return f"done {step}"

            return await guarded_async(conn, effect, key=key(step, compensation=compensation))

    assert await guard("s/a") == "done s/a"
    assert await guard("s/a") == "done s/a"  # the retry: recorded, not run again
    assert await guard("s/a", compensation=True) is None
    assert await guard("s/a", compensation=True) is None  # twice: once
    assert await guard("s/b", compensation=True) is None  # nothing to undo
    with pytest.raises(CompensatedFirst):
        await guard("s/b")  # the late attempt
    assert ran == ["do s/a", "undo s/a"]


def _worker(env: WorkflowEnvironment, queue: str, log: Path) -> subprocess.Popen[bytes]:
    """A worker process serving RoomSaga, once it polls."""
    address = env.client.service_client.config.target_host
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.barrier_worker", queue],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while b"ready" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


async def test_a_worker_killed_between_the_commit_and_the_completion_books_once(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path, db: str
) -> None:
    """The first attempt commits its booking, then its worker is SIGKILLed before the
    activity completes; the retry, on another worker, gets the recorded booking."""
    committed = tmp_path / "committed"
    first = _worker(env, task_queue, tmp_path / "first.log")
    try:
        room = Room(db=db, stall_after_commit=str(committed), attempts=3)
        handle = await client.start_workflow(
            RoomSaga.run, room, id=f"room-{uuid.uuid4()}", task_queue=task_queue
        )
        while not committed.exists():
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        second = _worker(env, task_queue, tmp_path / "second.log")
        try:
            await asyncio.wait_for(handle.result(), timeout=60)
        finally:
            second.kill()
    finally:
        first.kill()
    assert list(bookings(db).values()) == ["BOOKED"]  # once
    origins = {phase: origin for (_, phase), origin in records(db).items()}
    assert origins == {"forward": "forward"}
