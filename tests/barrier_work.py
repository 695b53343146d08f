"""A service that books under the barrier, for the barrier's tests, on SQLite or
PostgreSQL (``db``: a SQLite file's path, or ``postgresql:`` and a psycopg conninfo):
a ``bookings`` table beside the ``saga_barrier`` table; ``book`` and ``cancel`` are a
step's effect and its compensation, each in one transaction with the barrier."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

from temporal_saga import Saga
from temporal_saga.barrier import create_table, guarded
from temporal_saga.barrier._barrier import StepKey, _sql

POSTGRES = "postgresql:"


def connect(db: str) -> Any:
    if db.startswith(POSTGRES):
        import psycopg

        return psycopg.connect(db.removeprefix(POSTGRES))
    return sqlite3.connect(db, timeout=60)


def prepare(db: str) -> None:
    """Create the service's table and the barrier's."""
    conn = connect(db)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bookings (step TEXT PRIMARY KEY, status TEXT)")
        create_table(conn)
    conn.close()


def rows(db: str, query: str) -> list[tuple[Any, ...]]:
    conn = connect(db)
    try:
        return list(conn.execute(query).fetchall())
    finally:
        conn.close()


def _step(key: StepKey | None) -> str:
    """The booking's key: the step's, or in an activity its workflow's and step's."""
    if key:
        return key.step
    info = activity.info()
    return f"{info.workflow_id}:{info.activity_id.removesuffix('/compensate')}"


def book(db: str, key: StepKey | None = None) -> str | None:
    """The step's effect: a booking, once."""
    conn = connect(db)
    try:
        with conn:

            def insert() -> str:
                step = _step(key)
                conn.execute(_sql(conn, "INSERT INTO bookings VALUES (?, 'BOOKED')"), (step,))
                return f"booked {step}"

            return guarded(conn, insert, key=key)
    finally:
        conn.close()


def cancel(db: str, key: StepKey | None = None) -> None:
    """The compensation: cancel the booking, once."""
    conn = connect(db)
    try:
        with conn:

            def update() -> None:
                query = "UPDATE bookings SET status = 'CANCELLED' WHERE step = ?"
                conn.execute(_sql(conn, query), (_step(key),))

            guarded(conn, update, key=key)
    finally:
        conn.close()


class Room(BaseModel):
    db: str
    delay: float = 0.0  # seconds before the attempt reaches the database
    # After the first attempt committed: touch this file, then stall (to be killed).
    stall_after_commit: str | None = None
    attempts: int = 1  # the step's maximum attempts
    # A file each attempt appends "<phase> <workflow id> <process id>" to, once done.
    trace: str | None = None


def _trace(room: Room, phase: str) -> None:
    if room.trace:
        with open(room.trace, "a") as out:
            out.write(f"{phase} {activity.info().workflow_id} {os.getpid()}\n")


@activity.defn
def book_room(room: Room) -> str | None:
    time.sleep(room.delay)  # a slow attempt: it may arrive after its compensation
    try:
        booked = book(room.db)
    finally:
        _trace(room, "forward")
    if room.stall_after_commit and activity.info().attempt == 1:
        Path(room.stall_after_commit).touch()  # committed: the test kills this worker
        time.sleep(60)
    return booked


@activity.defn
def cancel_room(room: Room) -> None:
    cancel(room.db)
    _trace(room, "compensation")


@workflow.defn
class RoomSaga:
    """One room, whose booking attempt may arrive after the step timed out."""

    @workflow.run
    async def run(self, room: Room) -> None:
        saga = Saga("room", start_to_close_timeout=timedelta(seconds=1))
        saga.step(
            "book room",
            book_room,
            room,
            compensate=cancel_room,
            retry_policy=RetryPolicy(maximum_attempts=room.attempts),
        )
        await saga.run()
