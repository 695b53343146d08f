"""The trip's Python services' persistent state: one SQLite ledger per service.

Every booking is made and cancelled under ``temporal_saga.barrier``, in the same
transaction as the booking's own row, which gives the services what a saga needs from
them (docs/barrier.md):

- a retried booking returns the first booking instead of booking twice;
- a cancel happens once, and succeeds doing nothing when there is nothing to cancel,
  so a compensation may run for a step that never took effect;
- a booking that arrives after its cancel (a late attempt of an uncertain step) is
  refused, so nothing stays booked behind the saga's back.

And one rule of the service's own: everything booked under a key prefix (all of a
nested saga's steps) can be cancelled at once, and later bookings under that prefix
are refused too (a nested saga terminated mid-flight has no compensations of its own).

Where: SQLite files in ``$TRIP_DATA_DIR`` (default ``data/services``), one per service;
or, with ``$TRIP_DATABASE_URL`` set (a PostgreSQL URL or conninfo), one PostgreSQL
database with a schema per service. Connections are opened per call, so any number
of worker threads and processes can share them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from temporal_saga.barrier import CompensatedFirst, create_table, guarded

BOOKED = "BOOKED"
CANCELLED = "CANCELLED"

# The columns of a service's bookings; on PostgreSQL a ``seq`` column keeps their
# order (SQLite has its rowid).
_BOOKINGS = (
    "key TEXT PRIMARY KEY, booking_id TEXT, holder TEXT, city TEXT, first_day TEXT, "
    "last_day TEXT, quantity INTEGER, status TEXT NOT NULL"
)
_PREFIXES = "CREATE TABLE IF NOT EXISTS cancelled_prefixes (prefix TEXT PRIMARY KEY)"


class BookingRefused(Exception):
    """The service refuses the booking for good (full, or already cancelled)."""


@dataclass(frozen=True)
class Booking:
    """A row of a service's ledger."""

    key: str
    booking_id: str | None
    holder: str | None
    city: str | None
    first_day: date | None
    last_day: date | None
    quantity: int | None
    status: str


#: Where the services keep their data: a directory of SQLite files, or a PostgreSQL
#: URL or conninfo (a schema per service).
Where = Path | str


def where() -> Where:
    """``$TRIP_DATABASE_URL`` if set (PostgreSQL), else ``$TRIP_DATA_DIR``."""
    return os.environ.get("TRIP_DATABASE_URL") or Path(
        os.environ.get("TRIP_DATA_DIR", "data/services")
    )


def environment(place: Where) -> dict[str, str]:
    """The environment variables that point a worker's services at ``place``."""
    if isinstance(place, Path):
        return {"TRIP_DATA_DIR": str(place)}
    return {"TRIP_DATABASE_URL": place}


def describe(place: Where) -> str:
    """``place`` for a log line (a PostgreSQL database without its password)."""
    if isinstance(place, Path):
        return str(place)
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(place)
    return f"PostgreSQL database {info.get('dbname')!r} at {info.get('host', 'localhost')}"


class Transaction:
    """A transaction on a service's database, queried with ``?`` placeholders on
    either engine; ``conn`` is the driver's connection (for the barrier)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._postgres = not isinstance(conn, sqlite3.Connection)

    def execute(self, query: str, params: Sequence[object] = ()) -> Any:
        """Run ``query``; the driver's cursor."""
        return self.conn.execute(query.replace("?", "%s") if self._postgres else query, params)


Check = Callable[[Transaction], None]

# (place, service) whose tables this process has created on PostgreSQL.
_CREATED: set[tuple[str, str]] = set()


class Ledger:
    """One service's bookings: ``<dir>/<service>.db``, or schema ``<service>`` of a
    PostgreSQL database."""

    def __init__(self, service: str, prefix: str, place: Where | None = None) -> None:
        self.service = service
        self.prefix = prefix
        self.place = where() if place is None else place

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        if isinstance(self.place, Path):
            with self._sqlite() as conn:
                yield Transaction(conn)
        else:
            with self._postgres() as conn:
                yield Transaction(conn)

    @contextmanager
    def _sqlite(self) -> Iterator[sqlite3.Connection]:
        assert isinstance(self.place, Path)
        self.place.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.place / f"{self.service}.db", timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(f"CREATE TABLE IF NOT EXISTS bookings ({_BOOKINGS}); {_PREFIXES}")
            create_table(conn)  # the barrier's
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time: capacity checks hold
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _postgres(self) -> Iterator[Any]:
        import psycopg

        assert isinstance(self.place, str)
        # Commits when the block ends, rolls back on an exception, then closes.
        with psycopg.connect(self.place, options=f"-c search_path={self.service}") as conn:
            # One writer per service at a time, as SQLite's write lock: capacity checks
            # hold, and the tables are created once (committed apart from the work).
            lock = "SELECT pg_advisory_xact_lock(hashtext(%s))"
            if (self.place, self.service) not in _CREATED:
                conn.execute(lock, (self.service,))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.service}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS bookings ({_BOOKINGS}, seq BIGSERIAL)")
                conn.execute(_PREFIXES)
                create_table(conn)  # the barrier's
                conn.commit()
                _CREATED.add((self.place, self.service))
            conn.execute(lock, (self.service,))
            yield conn

    def book(
        self,
        key: str,
        *,
        holder: str,
        city: str,
        first_day: date,
        last_day: date,
        quantity: int = 1,
        check: Check | None = None,
    ) -> str:
        """Book once per step (a saga step's activity: ``key`` is its idempotency key)
        and return the booking id.

        Raises:
            BookingRefused: The step was cancelled already, or ``check`` refused.
        """
        with self._transaction() as conn:

            def book() -> str:
                if conn.execute(
                    "SELECT 1 FROM cancelled_prefixes WHERE substr(?, 1, length(prefix)) = prefix",
                    (key,),
                ).fetchone():
                    raise BookingRefused(
                        f"{self.service}: booking {key} was cancelled before it arrived"
                    )
                if check is not None:
                    check(conn)
                booking_id = f"{self.prefix}-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"
                conn.execute(
                    "INSERT INTO bookings (key, booking_id, holder, city, first_day, last_day, "
                    "quantity, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        booking_id,
                        holder,
                        city,
                        first_day.isoformat(),
                        last_day.isoformat(),
                        quantity,
                        BOOKED,
                    ),
                )
                return booking_id

            try:
                return str(guarded(conn.conn, book))
            except CompensatedFirst as err:
                raise BookingRefused(
                    f"{self.service}: booking {key} was cancelled before it arrived"
                ) from err

    def cancel(self, key: str) -> bool:
        """Cancel this step's booking (a saga step's compensation: ``key`` is its
        idempotency key), once; True if a booking was active."""
        with self._transaction() as conn:
            cancelled: list[bool] = []
            guarded(conn.conn, lambda: cancelled.append(self._cancel(conn, key)))
            return bool(cancelled and cancelled[0])

    def cancel_by_hand(self, key: str) -> bool:
        """An operator's cancel at the service's desk, outside any saga step; True if
        a booking was active."""
        with self._transaction() as conn:
            return self._cancel(conn, key)

    @staticmethod
    def _cancel(conn: Transaction, key: str) -> bool:
        return bool(
            conn.execute(
                "UPDATE bookings SET status = ? WHERE key = ? AND status = ?",
                (CANCELLED, key, BOOKED),
            ).rowcount
        )

    def cancel_all(self, prefix: str) -> int:
        """Cancel every booking whose key starts with ``prefix``, now and to come;
        returns how many were active."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO cancelled_prefixes VALUES (?) ON CONFLICT DO NOTHING", (prefix,)
            )
            return int(
                conn.execute(
                    "UPDATE bookings SET status = ? WHERE status = ? AND substr(key, 1, ?) = ?",
                    (CANCELLED, BOOKED, len(prefix), prefix),
                ).rowcount
            )

    def bookings(self, *, holder: str | None = None) -> list[Booking]:
        """Every booking (cancelled ones included), optionally of one holder."""
        order = "rowid" if isinstance(self.place, Path) else "seq"
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT key, booking_id, holder, city, first_day, last_day, quantity, status "
                f"FROM bookings {'' if holder is None else 'WHERE holder = ?'} ORDER BY {order}",
                () if holder is None else (holder,),
            ).fetchall()
        return [
            Booking(key, booking_id, who, city, _day(first), _day(last), quantity, status)
            for key, booking_id, who, city, first, last, quantity, status in rows
        ]

    def active(self, *, holder: str | None = None) -> list[Booking]:
        """The bookings in force, optionally of one holder."""
        return [b for b in self.bookings(holder=holder) if b.status == BOOKED]


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def nights(first_day: date, last_day: date) -> Iterator[date]:
    """Every night from ``first_day`` up to and including ``last_day``."""
    day = first_day
    while day <= last_day:
        yield day
        day += timedelta(days=1)
