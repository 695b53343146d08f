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

Files live in ``$TRIP_DATA_DIR`` (default ``data/services``); connections are opened
per call, so any number of worker threads and processes can share them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from temporal_saga.barrier import CompensatedFirst, create_table, guarded

BOOKED = "BOOKED"
CANCELLED = "CANCELLED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    key         TEXT PRIMARY KEY,
    booking_id  TEXT,
    holder      TEXT,
    city        TEXT,
    first_day   TEXT,
    last_day    TEXT,
    quantity    INTEGER,
    status      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cancelled_prefixes (prefix TEXT PRIMARY KEY)
"""


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


def data_dir() -> Path:
    """Where the services keep their databases (``$TRIP_DATA_DIR``)."""
    return Path(os.environ.get("TRIP_DATA_DIR", "data/services"))


Check = Callable[[sqlite3.Connection], None]


class Ledger:
    """One service's bookings, in ``<data_dir>/<service>.db``."""

    def __init__(self, service: str, prefix: str, directory: Path | None = None) -> None:
        self.service = service
        self.prefix = prefix
        self.path = (directory or data_dir()) / f"{service}.db"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
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
                    "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
                return str(guarded(conn, book))
            except CompensatedFirst as err:
                raise BookingRefused(
                    f"{self.service}: booking {key} was cancelled before it arrived"
                ) from err

    def cancel(self, key: str) -> bool:
        """Cancel this step's booking (a saga step's compensation: ``key`` is its
        idempotency key), once; True if a booking was active."""
        with self._transaction() as conn:
            cancelled: list[bool] = []
            guarded(conn, lambda: cancelled.append(self._cancel(conn, key)))
            return bool(cancelled and cancelled[0])

    def cancel_by_hand(self, key: str) -> bool:
        """An operator's cancel at the service's desk, outside any saga step; True if
        a booking was active."""
        with self._transaction() as conn:
            return self._cancel(conn, key)

    @staticmethod
    def _cancel(conn: sqlite3.Connection, key: str) -> bool:
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
            conn.execute("INSERT OR IGNORE INTO cancelled_prefixes VALUES (?)", (prefix,))
            return conn.execute(
                "UPDATE bookings SET status = ? WHERE status = ? AND substr(key, 1, ?) = ?",
                (CANCELLED, BOOKED, len(prefix), prefix),
            ).rowcount

    def bookings(self, *, holder: str | None = None) -> list[Booking]:
        """Every booking (cancelled ones included), optionally of one holder."""
        if not self.path.exists():
            return []
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            rows = conn.execute(
                "SELECT key, booking_id, holder, city, first_day, last_day, quantity, status "
                "FROM bookings WHERE ? IS NULL OR holder = ? ORDER BY rowid",
                (holder, holder),
            ).fetchall()
        finally:
            conn.close()
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
