"""The barrier's rules, in the service's own database transaction.

Temporal runs a step's activity at least once, so a service sees three hazards: a
retried step (its effect must happen once, and the retry get the same result), a
compensation for a step that never took effect (it must succeed doing nothing), and a
step attempt that arrives after its compensation (it must do nothing, or it stays in
effect behind the saga's back). One table, ``saga_barrier``, keyed by the step's
identity (workflow id, run id, the step's activity id) and phase (``forward`` or
``compensation``), settles all three, inside the transaction that makes the service's
own writes, so a barrier record commits or rolls back with them:

* forward: insert its ``forward`` row; inserted, the effect runs and its result is
  recorded; already there, either a retry (return the recorded result) or the
  compensation's marker (it ran first: do nothing, fail for good);
* compensation: insert its ``compensation`` row; already there, a duplicate (do
  nothing); then insert the ``forward`` row as the compensation's marker: inserted,
  no forward ever took effect (do nothing, and block a late forward); already there,
  undo the forward's effect.

Concurrent attempts are ordered by the database: an insert waits for a conflicting
insert's transaction to end (SQLite's write lock; PostgreSQL's unique index).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from pydantic_core import to_jsonable_python

from .._errors import CompensatedFirst
from .._protocol import COMPENSATION_SUFFIX, parse_step_id, running_step

T = TypeVar("T")

#: The table's name.
TABLE = "saga_barrier"

#: The statements that create the table and its index (``create_table`` runs them).
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " workflow_id TEXT NOT NULL,"
    " run_id TEXT NOT NULL,"
    " step TEXT NOT NULL,"  # the step's activity id, without /compensate
    " phase TEXT NOT NULL,"  # forward | compensation
    " origin TEXT NOT NULL,"  # the phase that wrote the row
    " result TEXT,"  # the forward's result, as JSON
    " created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
    " PRIMARY KEY (workflow_id, run_id, step, phase))",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)",
)

FORWARD = "forward"
COMPENSATION = "compensation"


class Connection(Protocol):
    """A database connection the barrier writes on: ``sqlite3.Connection`` or
    ``psycopg.Connection`` (both have ``execute``, which returns a cursor)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


class AsyncConnection(Protocol):
    """``psycopg.AsyncConnection``."""

    async def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def _sql(conn: object, query: str) -> str:
    """``query`` (written with ``?``) in the connection's parameter style: sqlite3's
    ``?``, psycopg's ``%s``."""
    return query if isinstance(conn, sqlite3.Connection) else query.replace("?", "%s")


_INSERT = (
    f"INSERT INTO {TABLE} (workflow_id, run_id, step, phase, origin) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_RECORD = (
    f"UPDATE {TABLE} SET result = ? WHERE workflow_id = ? AND run_id = ? AND step = ? AND phase = ?"
)
_READ = (
    f"SELECT origin, result FROM {TABLE} WHERE workflow_id = ? AND run_id = ? AND step = ? "
    "AND phase = ?"
)


@dataclass(frozen=True, slots=True)
class StepKey:
    """A step's identity and phase, as the barrier keys its records.

    Attributes:
        workflow_id: The saga's workflow id.
        run_id: Its workflow run id.
        step: The step's activity id (a compensation's without ``/compensate``).
        compensation: The phase: the step's compensation (True) or the step (False).
    """

    workflow_id: str
    run_id: str
    step: str
    compensation: bool

    @classmethod
    def current(cls) -> StepKey:
        """The key of the activity that is running (a saga's step or compensation), or
        of the Nexus operation a handler is starting for one (``NexusOperation``).

        Raises:
            TypeError: Not inside an activity of a saga's step or compensation, nor a
                Nexus handler starting one.
        """
        try:
            running = running_step()
        except RuntimeError as err:
            raise TypeError(f"the barrier guards a saga step's work: {err}") from None
        ident = parse_step_id(running.activity_id)
        if ident is None or not running.workflow_id or not running.run_id:
            raise TypeError(
                f"{running.activity_id!r} is not a saga step's or compensation's "
                "activity id: the barrier has no key for it"
            )
        step = running.activity_id.removesuffix(COMPENSATION_SUFFIX)  # as recorded so far
        return cls(running.workflow_id, running.run_id, step, ident.compensation)


def guarded(conn: Connection, effect: Callable[[], T], *, key: StepKey | None = None) -> T | None:
    """Run ``effect`` (the service's own writes, on ``conn``) under the barrier.

    Call it inside the transaction that ``effect`` writes in, and commit (or roll
    back) that transaction as usual: the barrier's record is written on ``conn`` and
    never committed apart. In a step's activity, ``effect`` makes the step's effect;
    in its compensation, it undoes it. With SQLAlchemy, pass the session's DBAPI
    connection (``session.connection().connection.driver_connection``) and let the
    session commit.

    Args:
        conn: The service's connection, ``sqlite3`` or ``psycopg`` (at PostgreSQL's
            default isolation, read committed), in the transaction ``effect`` writes in.
        effect: The service's work (a zero-argument callable).
        key: The step's key; by default the running activity's
            (:meth:`StepKey.current`).

    Returns:
        The step's: ``effect``'s result, or on a retry the result recorded the first
        time (decoded from JSON, as the data converter would send it). The
        compensation's: None.

    Raises:
        CompensatedFirst: A step's attempt that came after its compensation (a
            non-retryable ``ApplicationError``): nothing was done.
        TypeError: No key: not inside a saga step's activity.
    """
    key = key or StepKey.current()
    ident = (key.workflow_id, key.run_id, key.step)

    def insert(phase: str, origin: str) -> bool:
        return bool(conn.execute(_sql(conn, _INSERT), (*ident, phase, origin)).rowcount == 1)

    if not key.compensation:
        if insert(FORWARD, FORWARD):
            result = effect()
            conn.execute(_sql(conn, _RECORD), (_json(result), *ident, FORWARD))
            return result
        recorded: T = _recorded(key, conn.execute(_sql(conn, _READ), (*ident, FORWARD)).fetchone())
        return recorded
    if insert(COMPENSATION, COMPENSATION) and not insert(FORWARD, COMPENSATION):
        effect()  # compensated once, and a forward had taken effect: undo it
    return None


async def guarded_async(
    conn: AsyncConnection,
    effect: Callable[[], Awaitable[T]],
    *,
    key: StepKey | None = None,
) -> T | None:
    """:func:`guarded` for an async activity: ``conn`` a ``psycopg.AsyncConnection``,
    ``effect`` a coroutine function."""
    key = key or StepKey.current()
    ident = (key.workflow_id, key.run_id, key.step)

    async def insert(phase: str, origin: str) -> bool:
        cursor = await conn.execute(_sql(conn, _INSERT), (*ident, phase, origin))
        return bool(cursor.rowcount == 1)

    if not key.compensation:
        if await insert(FORWARD, FORWARD):
            result = await effect()
            await conn.execute(_sql(conn, _RECORD), (_json(result), *ident, FORWARD))
            return result
        cursor = await conn.execute(_sql(conn, _READ), (*ident, FORWARD))
        recorded: T = _recorded(key, await cursor.fetchone())
        return recorded
    if await insert(COMPENSATION, COMPENSATION) and not await insert(FORWARD, COMPENSATION):
        await effect()
    return None


def _json(result: object) -> str:
    return json.dumps(to_jsonable_python(result))


def _recorded(key: StepKey, row: tuple[str, str | None]) -> Any:
    """A forward attempt that found its row: a retry's recorded result, or the
    compensation's marker (it ran first)."""
    origin, recorded = row
    if origin == COMPENSATION:
        raise CompensatedFirst(
            f"step {key.step!r} was compensated before this attempt ran: it does nothing"
        )
    return None if recorded is None else json.loads(recorded)


def create_table(conn: Connection) -> None:
    """Create the barrier's table and index, if they do not exist (in ``conn``'s
    current transaction: commit it)."""
    for statement in SCHEMA:
        conn.execute(statement)


def prune(conn: Connection, *, older_than: timedelta) -> int:
    """Delete the records older than ``older_than``; how many.

    Only once no attempt of their steps can come any more: after the namespace's
    retention (a closed workflow's history is gone, so none of its activities can
    run), which is at least the longest a saga runs plus its retention.
    """
    seconds = int(older_than.total_seconds())
    if isinstance(conn, sqlite3.Connection):
        cursor = conn.execute(
            f"DELETE FROM {TABLE} WHERE created_at < datetime('now', ?)", (f"-{seconds} seconds",)
        )
    else:  # PostgreSQL
        cursor = conn.execute(
            f"DELETE FROM {TABLE} WHERE created_at < LOCALTIMESTAMP - make_interval(secs => %s)",
            (seconds,),
        )
    return int(cursor.rowcount)
