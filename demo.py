"""``make demo``: the trip-package saga end to end, on a real Temporal server.

Uses the server at ``$TEMPORAL_ADDRESS`` (default ``localhost:7233``) if one answers,
else starts a dev server there (SQLite history in ``data/temporal.db``, Web UI on
``$TEMPORAL_UI_PORT``, default 8233). Starts the worker, runs Maria's trip (it
succeeds) and Kevin's (Maria took the last hotel room in Venice, so it is
compensated), prints both traces, checks the services' databases, and stops what it
started. Exits 0 when everything went as described.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from activities.models import TripRequest
from activities.trip import airline, attractions, hotel
from starter import buy_trip, ui_url
from temporal_saga import connect, render_trace
from temporal_saga._client import local_temporal_cli

DATA = Path("data")
SERVICES = DATA / "demo" / "services"


def start_dev_server(address: str) -> subprocess.Popen[bytes]:
    host, _, port = address.rpartition(":")
    ui_port = os.environ.get("TEMPORAL_UI_PORT", "8233")
    os.environ.setdefault("TEMPORAL_UI_URL", f"http://localhost:{ui_port}")
    DATA.mkdir(exist_ok=True)
    log = (DATA / "dev-server.log").open("wb")
    command = [local_temporal_cli(), "server", "start-dev", "--ip", host or "127.0.0.1"]
    command += ["--port", port, "--ui-port", ui_port, "--db-filename", str(DATA / "temporal.db")]
    command += ["--log-level", "error", "--search-attribute", "SagaStatus=Keyword"]
    print(f"Temporal: starting a dev server at {address} (Web UI http://localhost:{ui_port})")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    print(f"Worker: starting (log in {log})")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("worker.py"))],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def wait_for_server(server: subprocess.Popen[bytes], seconds: float = 60) -> Client:
    for _ in range(int(seconds * 4)):
        if server.poll() is not None:
            raise RuntimeError(f"the dev server exited; see {DATA / 'dev-server.log'}")
        try:
            return await connect(connect_timeout=timedelta(seconds=1))
        except RuntimeError:
            await asyncio.sleep(0.25)
    raise RuntimeError(f"the dev server did not answer within {seconds} s")


async def ensure_saga_status_attribute(client: Client) -> None:
    """Register SagaStatus on a server that lacks it (the trip saga keeps it), or the
    saga's workflow tasks would fail on every attempt."""
    operator = client.operator_service
    listed = await operator.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    if "SagaStatus" not in listed.custom_attributes:
        await operator.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={"SagaStatus": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
            )
        )
        print("Temporal: registered the SagaStatus search attribute")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


async def demo() -> bool:
    address = os.environ.setdefault("TEMPORAL_ADDRESS", "localhost:7233")
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    try:
        try:
            client = await connect(connect_timeout=timedelta(seconds=2))
            print(f"Temporal: using the server that answers at {address}")
        except Exception:
            if not address.startswith(("localhost:", "127.0.0.1:")):
                raise
            server = start_dev_server(address)
            client = await wait_for_server(server)
        await ensure_saga_status_attribute(client)
        shutil.rmtree(SERVICES, ignore_errors=True)
        SERVICES.mkdir(parents=True)
        os.environ["TRIP_DATA_DIR"] = str(SERVICES)  # for the worker, and our checks
        worker = start_worker(SERVICES.parent / "worker.log")

        check_in = date.today() + timedelta(days=30)
        trips = [
            ("Maria buys a trip package to Venice", "Maria", "YA1234567"),
            ("Kevin buys the same trip: Maria took the last hotel room", "Kevin", "KB7654321"),
        ]
        outcomes = {}
        for title, traveller, passport in trips:
            print(f"\n── {title} ──\n")
            trip = TripRequest(
                traveller=traveller,
                passport=passport,
                origin="Lisbon",
                destination="Venice",
                check_in=check_in,
                nights=3,
                tickets=2,
            )
            handle, outcome = await buy_trip(client, trip)
            outcomes[traveller] = outcome
            print(render_trace(outcome.state))
            print(f"\nWeb UI: {ui_url(client, handle)}")

        print(f"\n── The services' databases ({SERVICES}) ──\n")
        ledgers = [airline(), hotel(), attractions()]
        maria = [b for ledger in ledgers for b in ledger.active(holder="Maria")]
        kevin = [b for ledger in ledgers for b in ledger.active(holder="Kevin")]
        kevin_rows = [b for ledger in ledgers for b in ledger.bookings(holder="Kevin")]
        ok = (
            outcomes["Maria"].booking is not None
            and outcomes["Kevin"].booking is None
            and len(maria) == 3
            and not kevin
        )
        mark = "✔️" if len(maria) == 3 else "❌"
        ids = ", ".join(str(b.booking_id) for b in maria)
        print(f"{mark} Maria holds {len(maria)} active bookings: {ids}")
        mark = "✔️" if not kevin else "❌"
        print(f"{mark} Kevin holds {len(kevin)} active bookings ({len(kevin_rows)} cancelled)")
        return ok
    finally:
        stop(worker)
        stop(server)


def main() -> None:
    try:
        ok = asyncio.run(demo())
    except Exception as err:
        print(f"demo failed: {err}", file=sys.stderr)
        ok = False
    print("\nDemo finished: " + ("everything as expected." if ok else "SOMETHING WENT WRONG."))
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # skip interpreter teardown (sdk-python issue 300)


if __name__ == "__main__":
    main()
