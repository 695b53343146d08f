"""What the barrier costs a service: per guarded call, against the same work without it.

    python -m bench.barrier [--calls 2000] [--rounds 5]

On SQLite (a file, WAL, as the example's services use it) and on PostgreSQL (a server
the benchmark starts, as the tests do: Debian's package), one call is one transaction
that inserts a booking row; guarded, the same transaction also writes the barrier's
record (2 more statements: its insert and the result). The compensation's path is
timed too (an update under the barrier: 2 inserts). Rounds alternate the contenders;
the figures are medians of the rounds' means.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporal_saga.barrier import create_table, guarded
from temporal_saga.barrier._barrier import StepKey, _sql


def _transaction(conn: Any) -> Any:
    """One transaction: sqlite3's connection as a context manager; psycopg's
    ``transaction()`` (its connection as a context manager would close it)."""
    return conn if isinstance(conn, sqlite3.Connection) else conn.transaction()


def _prepare(conn: Any) -> None:
    with _transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS bookings (step TEXT PRIMARY KEY, status TEXT)")
        create_table(conn)


def _call(conn: Any, step: str, *, barrier: bool, undo: bool = False) -> None:
    def work() -> None:
        if undo:
            query = "UPDATE bookings SET status = 'CANCELLED' WHERE step = ?"
        else:
            query = "INSERT INTO bookings VALUES (?, 'BOOKED')"
        conn.execute(_sql(conn, query), (step,))

    with _transaction(conn):
        if barrier:
            guarded(conn, work, key=StepKey("bench", "run", step, undo))
        else:
            work()


def _round(conn: Any, calls: int, *, barrier: bool, undo: bool) -> float:
    """Mean microseconds per call over ``calls`` fresh steps (booked first, for undo)."""
    steps = [f"{uuid.uuid4().hex}/s" for _ in range(calls)]
    if undo:
        for step in steps:
            _call(conn, step, barrier=barrier)
    began = time.perf_counter()
    for step in steps:
        _call(conn, step, barrier=barrier, undo=undo)
    return (time.perf_counter() - began) / calls * 1e6


def measure(connect: Callable[[], Any], calls: int, rounds: int) -> dict[str, float]:
    conn = connect()
    _prepare(conn)
    figures: dict[str, list[float]] = {}
    for number in range(rounds):
        for barrier in (False, True) if number % 2 == 0 else (True, False):
            for undo in (False, True):
                name = f"{'undo' if undo else 'do'}, {'barrier' if barrier else 'plain'}"
                figures.setdefault(name, []).append(_round(conn, calls, barrier=barrier, undo=undo))
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-barrier-"))

    def sqlite() -> sqlite3.Connection:
        conn = sqlite3.connect(folder / "service.db", timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    results = {"SQLite": measure(sqlite, args.calls, args.rounds)}
    from tests.postgres import new_database, server

    with server() as conninfo:
        import psycopg

        database = new_database(conninfo)
        results["PostgreSQL"] = measure(lambda: psycopg.connect(database), args.calls, args.rounds)
    print("| per call (µs, median of rounds) | plain | barrier | added | ratio |")
    print("|---|---|---|---|---|")
    for db, figures in results.items():
        for kind in ("do", "undo"):
            plain, guarded_ = figures[f"{kind}, plain"], figures[f"{kind}, barrier"]
            what = "step (insert)" if kind == "do" else "compensation (update)"
            print(
                f"| {db}, {what} | {plain:.0f} | {guarded_:.0f} | {guarded_ - plain:.0f} "
                f"| {guarded_ / plain:.2f} |"
            )


if __name__ == "__main__":
    main()
