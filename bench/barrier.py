"""What the barrier costs a service: per guarded call, against the same work without it,
and the trip saga's throughput with and without it.

    python -m bench.barrier [--calls 2000] [--rounds 5] [--trips 200]

On SQLite (a file, WAL, as the example's services use it) and on PostgreSQL (a server
the benchmark starts, as the tests do: Debian's package), one call is one transaction
that inserts a booking row; guarded, the same transaction also writes the barrier's
record (2 more statements: its insert and the result). The compensation's path is
timed too (an update under the barrier: 2 inserts). Rounds alternate the contenders;
the figures are medians of the rounds' means.

The trip saga: on a dev server of its own, ``worker.py`` (its own process, as
deployed) serves ``--trips`` trips started at once, each booking with five services
and paying (a prompt confirmation: a 0.5 s wait); the same worker without the barrier
has ``activities.ledger.guarded`` replaced by a plain call. Each round runs the four
contenders (SQLite and PostgreSQL, barrier or not) in rotated order, each on fresh
databases; the figures are the medians of trips per second (first start to last
result) and of the worker's CPU time per trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client

from temporal_saga.barrier import create_table, guarded
from temporal_saga.barrier._barrier import StepKey, _sql

from ._processes import ROOT, connect, cpu_seconds, free_port, start_server, stop


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


# worker.py, without the barrier when BENCH_NO_BARRIER is set: the services' same
# transactions, their effect called directly.
_WORKER = """
import os, runpy, sys
import activities.ledger
if os.environ.get("BENCH_NO_BARRIER"):
    activities.ledger.guarded = lambda conn, effect: effect()
sys.argv[0] = "worker.py"
runpy.run_path("worker.py", run_name="__main__")
"""


def _worker(queue: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, "--task-queue", queue],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def _trips(client: Client, queue: str, trips: int) -> float:
    """Start ``trips`` trips at once; seconds until the last one's result."""
    from activities.models import TripRequest
    from workflows.trip import BuyTripPackage

    began = time.perf_counter()
    handles = [
        await client.start_workflow(
            BuyTripPackage.run,
            TripRequest(
                traveller=f"T{n:05}",
                passport="P1234567",
                origin="Lisbon",
                destination=("Lisbon", "Paris", "Rome")[n % 3],
                check_in=date(2027, 1, 1) + timedelta(days=n),  # rooms for all
                nights=1,
            ),
            id=f"trip-{n}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        for n in range(trips)
    ]
    await asyncio.gather(*(handle.result() for handle in handles))
    return time.perf_counter() - began


async def trip_throughput(
    places: dict[str, Callable[[], str | Path]], trips: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Trips per second and the worker's CPU ms per trip, per contender (medians)."""
    from activities.ledger import environment

    folder = Path(tempfile.mkdtemp(prefix="bench-trips-"))
    port = free_port()
    server = start_server(port, folder / "server.log")
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        client = await connect(f"127.0.0.1:{port}")
        contenders = [(db, barrier) for db in places for barrier in (True, False)]
        for number in range(rounds):
            shift = number % len(contenders)
            for db, barrier in contenders[shift:] + contenders[:shift]:
                queue, log = f"trips-{uuid.uuid4().hex[:8]}", folder / f"worker-{number}.log"
                env = {
                    "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
                    **environment(places[db]()),
                    **({} if barrier else {"BENCH_NO_BARRIER": "1"}),
                }
                worker = _worker(queue, log, env)
                try:
                    while b"serving task queue" not in log.read_bytes():
                        assert worker.poll() is None, log.read_text()
                        await asyncio.sleep(0.05)
                    cpu = cpu_seconds(worker.pid)
                    seconds = await _trips(client, queue, trips)
                    cpu = cpu_seconds(worker.pid) - cpu
                finally:
                    stop(worker)
                name = f"{db}, {'barrier' if barrier else 'plain'}"
                figures.setdefault(name, {}).setdefault("trips/s", []).append(trips / seconds)
                figures[name].setdefault("cpu ms/trip", []).append(cpu / trips * 1e3)
    finally:
        stop(server)
    return {
        name: {what: statistics.median(values) for what, values in measured.items()}
        for name, measured in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trips", type=int, default=200, help="trips per round (0: none)")
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
        places: dict[str, Callable[[], str | Path]] = {
            "SQLite": lambda: Path(tempfile.mkdtemp(prefix="bench-services-")),
            "PostgreSQL": lambda: new_database(conninfo),
        }
        trips = asyncio.run(trip_throughput(places, args.trips, args.rounds)) if args.trips else {}
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
    if trips:
        print(f"\n| trip saga, {args.trips} at once (median of rounds) | plain | barrier | ratio |")
        print("|---|---|---|---|")
        for db in places:
            plain, guarded_ = trips[f"{db}, plain"], trips[f"{db}, barrier"]
            for what in ("trips/s", "cpu ms/trip"):
                print(
                    f"| {db}, {what} | {plain[what]:.1f} | {guarded_[what]:.1f} "
                    f"| {guarded_[what] / plain[what]:.2f} |"
                )


if __name__ == "__main__":
    main()
