"""``make demo``: the trip-package saga end to end, on a real Temporal server.

Uses the server at ``$TEMPORAL_ADDRESS`` (default ``localhost:7233``) if one answers,
else starts a dev server there (SQLite history in ``data/temporal.db``, Web UI on
``$TEMPORAL_UI_PORT``, default 8233). Starts the worker and the insurer's (another
team's, in its own namespace ``insurer``, behind the Nexus endpoint ``trip-insurer``,
which it creates), runs Maria's trip (it succeeds, insured over Nexus: the flight to
Venice is expensive, and paid: the payment provider confirms her charge by calling the
saga back), Kevin's (Maria took the last hotel room in Venice, so it is compensated),
Omar's (Venice a week later: the provider never confirms his payment, the wait times
out, and his trip is undone, his insurance cancelled in the insurer's namespace) and
Lena's (the hotel is full for her
too, and the airline refuses her refund: the saga waits for a human until an operator,
after refunding her at the airline's desk, resolves it with ``temporal-saga
resolve``), prints the traces, writes each trip's picture (``temporal-saga show ID
--graph svg``) into ``data/trip-NAME.svg``, checks the services' databases, and stops what it
started (``--keep``: not before Ctrl-C, to look around in the Web UI). Exits 0 when
everything went as described.

With an encryption key configured (``make demo-encrypted`` makes one in
``data/demo.key``), payloads are encrypted: the demo also starts the codec server,
points the dev server's Web UI at it, and checks that the stored histories hold no
traveller's name or passport in clear while the codec server decodes them for the
token holder.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToJson
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, WorkflowHandle

from activities.models import TripRequest
from activities.trip import airline, attractions, hotel, insurer, payments
from insurer.service import INSURER_ENDPOINT, INSURER_NAMESPACE, INSURER_TASK_QUEUE
from insurer.setup import ensure as ensure_insurer_endpoint
from starter import buy_trip, start_trip, trip_outcome
from temporal_saga import SagaState, SagaStatus
from temporal_saga._sdk import local_temporal_cli
from temporal_saga.client import connect, render_trace, watch, web_ui_url
from temporal_saga.encryption import EncryptionCodec, audit_history, start_codec_server

DATA = Path("data")
SERVICES = DATA / "demo" / "services"


UI_PORT = os.environ.get("TEMPORAL_UI_PORT", "8233")
UI = f"http://localhost:{UI_PORT}"


def start_dev_server(address: str, codec_endpoint: str | None) -> subprocess.Popen[bytes]:
    host, _, port = address.rpartition(":")
    os.environ.setdefault("TEMPORAL_UI_URL", UI)
    DATA.mkdir(exist_ok=True)
    log = (DATA / "dev-server.log").open("wb")
    command = [local_temporal_cli(), "server", "start-dev", "--ip", host or "127.0.0.1"]
    command += ["--port", port, "--ui-port", UI_PORT, "--db-filename", str(DATA / "temporal.db")]
    command += ["--log-level", "error", "--search-attribute", "SagaStatus=Keyword"]
    command += ["--namespace", INSURER_NAMESPACE]  # another team's
    if codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    print(f"Temporal: starting a dev server at {address} (Web UI {UI})")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


CAR_RENTAL = Path(__file__).with_name("services") / "car-rental"


def start_car_rental(log: Path) -> subprocess.Popen[bytes] | None:
    """The car-rental service, a Node.js worker; None if Node or its packages are
    missing (``make demo`` installs them when npm is there)."""
    node = shutil.which("node")
    if node is None or not (CAR_RENTAL / "node_modules").is_dir():
        print("Car rental: left out (it needs Node.js and `npm ci --prefix services/car-rental`)")
        return None
    print(f"Car rental: starting the Node.js worker (log in {log})")
    return subprocess.Popen(
        [node, "worker.js"],
        cwd=CAR_RENTAL,
        env=with_absolute_paths(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def with_absolute_paths(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a process started elsewhere (the Node worker's own folder):
    the services' data and the key file by absolute path. It shares the keys, so it
    reads and writes the encrypted payloads as the Python side does."""
    env = {**environ, "TRIP_DATA_DIR": str(SERVICES.resolve())}
    if env.get("TEMPORAL_SAGA_KEY_FILE"):
        env["TEMPORAL_SAGA_KEY_FILE"] = str(Path(env["TEMPORAL_SAGA_KEY_FILE"]).resolve())
    return env


def car_rentals(holder: str) -> dict[str, str]:
    """The car-rental service's ledger for ``holder``: status by booking key."""
    ledger = SERVICES / "car-rental.jsonl"
    rows: dict[str, dict[str, str]] = {}
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        row = json.loads(line)
        rows[row["key"]] = {**rows.get(row["key"], {}), **row}
    return {key: row["status"] for key, row in rows.items() if row.get("holder") == holder}


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    print(f"Worker: starting (log in {log})")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("worker.py"))],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_insurer(log: Path) -> subprocess.Popen[bytes]:
    """The insurer's worker: another team's, in its namespace, serving its Nexus service."""
    print(f"Insurer: starting its worker in namespace {INSURER_NAMESPACE!r} (log in {log})")
    here = str(Path(__file__).resolve().parent)  # where the insurer package is
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "insurer.worker"],
        env={**with_absolute_paths(os.environ), "PYTHONPATH": path},
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


async def serve_codec(codec: EncryptionCodec) -> tuple[web.AppRunner, str, str]:
    """The codec server for the Web UI; returns it, its URL and token."""
    token = os.environ.get("TEMPORAL_SAGA_CODEC_TOKEN") or secrets.token_urlsafe(16)
    port = int(os.environ.get("TEMPORAL_SAGA_CODEC_PORT", "8888"))
    server = await start_codec_server(codec, token, port=port, origin=UI)
    url = f"http://localhost:{port}"
    print(f"Codec server: {url} (sign in there with the token {token})")
    return server, url, token


def decode_as_operator(codec_url: str, token: str, payloads: Payloads) -> str:
    """What the codec server answers the token holder (as the Web UI asks it)."""
    request = urllib.request.Request(
        f"{codec_url}/decode",
        data=MessageToJson(payloads).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return "".join(base64.b64decode(p["data"]).decode() for p in answer["payloads"])


async def check_stored(
    handle: WorkflowHandle[object, object],
    trip: TripRequest,
    codec: tuple[str, str] | None,
) -> bool:
    """Audit the saga's history as Temporal stores it, then decode its input through
    the codec server as an operator with the token."""
    history = await handle.fetch_history()  # as stored: nothing is decoded
    found = audit_history(history.events)
    print(f"$ temporal-saga audit {handle.id}\n{found.report()}\n")
    stored = b"".join(event.SerializeToString() for event in history.events)
    secrets_found = [s for s in (trip.traveller, trip.passport) if s.encode() in stored]
    ok = not found.in_clear and not secrets_found
    mark = "✔️" if ok else "❌"
    named = ", ".join(secrets_found) or "no name, no passport"
    print(f"{mark} {len(found.in_clear)} payloads in clear; {named} in clear anywhere")
    if codec is None:
        print("   (no codec server: this demo did not start the dev server)")
        return ok
    start = history.events[0].workflow_execution_started_event_attributes
    # In a thread: the codec server answers on this event loop.
    readable = trip.passport in await asyncio.to_thread(decode_as_operator, *codec, start.input)
    mark = "✔️" if readable else "❌"
    print(f"{mark} the codec server decodes the input for the token holder: {trip.traveller}")
    return ok and readable


async def temporal_saga(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``temporal-saga`` command, as an operator would."""
    command = [sys.executable, "-m", "temporal_saga", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )


async def draw(workflow_id: str, traveller: str) -> None:
    """Write the saga's picture (``temporal-saga show ID --graph svg``) into data/."""
    picture = DATA / f"trip-{traveller.lower()}.svg"
    drawn = await temporal_saga("show", workflow_id, "--graph", "svg")
    if drawn.stdout.startswith("<svg"):
        picture.write_text(drawn.stdout)
        print(f"Picture: {picture} (temporal-saga show {workflow_id} --graph svg)")
    else:
        print(f"Picture: not drawn ({drawn.stderr.strip()})")


async def needs_a_human(client: Client, trip: TripRequest) -> bool:
    """Lena's trip: undone but for her flight, which waits for a human; an operator
    refunds her at the airline's desk and resolves the saga from the command line."""
    handle = await start_trip(client, trip)
    state: SagaState | None = None
    async for state in watch(handle):
        if state.status is SagaStatus.NEEDS_HUMAN:
            break
    assert state is not None
    print(render_trace(state))
    print(f"\nWeb UI: {web_ui_url(client.namespace, handle.id, handle.result_run_id)}")
    print("\n── An operator finishes it ──\n")
    desk = airline()
    refunded = sum(desk.cancel_by_hand(b.key) for b in desk.active(holder=trip.traveller))
    print(f"(at the airline's desk, by hand: {refunded} ticket refunded)")
    note = "refunded at the airline's desk"
    print(f'$ temporal-saga resolve {handle.id} "book plane ticket" --note "{note}" --by ops@demo')
    answer = await temporal_saga(
        "resolve", handle.id, "book plane ticket", "--note", note, "--by", "ops@demo"
    )
    print((answer.stdout or answer.stderr).strip() + "\n")
    outcome = await trip_outcome(handle)
    print(render_trace(outcome.state))
    await draw(handle.id, trip.traveller)
    return (
        state.needs_human == ["book plane ticket"]
        and answer.returncode == 0
        and outcome.state.status is SagaStatus.COMPENSATED
    )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


async def demo(keep: bool) -> bool:
    # SIGTERM (a service manager, `kill`) stops the demo like Ctrl-C: through the
    # `finally` below, which stops the worker and the dev server it started.
    running = asyncio.current_task()
    assert running is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    address = os.environ.setdefault("TEMPORAL_ADDRESS", "localhost:7233")
    encryption = EncryptionCodec.from_env()
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    insurer_worker: subprocess.Popen[bytes] | None = None
    car_rental: subprocess.Popen[bytes] | None = None
    codec_server: web.AppRunner | None = None
    codec: tuple[str, str] | None = None  # the codec server's URL and token
    try:
        try:
            client = await connect(connect_timeout=timedelta(seconds=2))
            print(f"Temporal: using the server that answers at {address}")
        except Exception:
            if not address.startswith(("localhost:", "127.0.0.1:")):
                raise
            if encryption is not None:
                codec_server, codec_url, token = await serve_codec(encryption)
                codec = (codec_url, token)
            server = start_dev_server(address, codec[0] if codec else None)
            client = await wait_for_server(server)
        if encryption is not None:
            print("Encryption: on (payloads are AES-256-GCM encrypted before they leave)")
        await ensure_saga_status_attribute(client)
        shutil.rmtree(SERVICES, ignore_errors=True)
        SERVICES.mkdir(parents=True)
        os.environ["TRIP_DATA_DIR"] = str(SERVICES)  # for the worker, and our checks
        worker = start_worker(SERVICES.parent / "worker.log")
        ensure_insurer_endpoint(address)
        print(
            f"Nexus: endpoint {INSURER_ENDPOINT!r} → namespace {INSURER_NAMESPACE!r}, "
            f"task queue {INSURER_TASK_QUEUE!r}"
        )
        insurer_worker = start_insurer(SERVICES.parent / "insurer.log")
        car_rental = start_car_rental(SERVICES.parent / "car-rental.log")
        cars = car_rental is not None

        check_in = date.today() + timedelta(days=30)
        trips: list[tuple[str, str, str, dict[str, Any]]] = [
            ("Maria buys a trip package to Venice", "Maria", "YA1234567", {}),
            ("Kevin buys the same trip: Maria took the last hotel room", "Kevin", "KB7654321", {}),
            (
                "Omar buys Venice a week later: his payment is never confirmed",
                "Omar",
                "OM1357924",
                {
                    "check_in": check_in + timedelta(days=7),
                    "confirmation": "never",
                    "car": False,
                },
            ),
        ]
        outcomes = {}
        handles = {}
        requests = {}
        for title, traveller, passport, changes in trips:
            print(f"\n── {title} ──\n")
            trip = TripRequest(
                traveller=traveller,
                passport=passport,
                origin="Lisbon",
                destination="Venice",
                check_in=check_in,
                nights=3,
                tickets=2,
                car=cars,
            ).model_copy(update=changes)
            handle, outcome = await buy_trip(client, trip)
            outcomes[traveller], handles[traveller], requests[traveller] = outcome, handle, trip
            print(render_trace(outcome.state))
            print(f"\nWeb UI: {web_ui_url(client.namespace, handle.id, handle.result_run_id)}")
            await draw(handle.id, traveller)
        print("\n── Lena buys it too: the hotel is full, and the airline refuses refunds ──\n")
        lena = requests["Kevin"].model_copy(
            update={
                "traveller": "Lena",
                "passport": "LC2468013",
                "faults": {"airline": "no_refund"},
                "car": False,
            }
        )
        resolved = await needs_a_human(client, lena)

        print(f"\n── The services' databases ({SERVICES}) ──\n")
        ledgers = [airline(), hotel(), attractions(), insurer(), payments()]
        maria = [b for ledger in ledgers for b in ledger.active(holder="Maria")]
        kevin = [b for ledger in ledgers for b in ledger.active(holder="Kevin")]
        kevin_rows = [b for ledger in ledgers for b in ledger.bookings(holder="Kevin")]
        omar = [b for ledger in ledgers for b in ledger.active(holder="Omar")]
        omar_rows = [b for ledger in ledgers for b in ledger.bookings(holder="Omar")]
        lena_held = [b for ledger in ledgers for b in ledger.active(holder="Lena")]
        policies = {who: insurer().bookings(holder=who) for who in ("Maria", "Omar")}
        insured = [p.status for p in policies["Maria"]] == ["BOOKED"]
        insured &= [p.status for p in policies["Omar"]] == ["CANCELLED"]
        ok = (
            outcomes["Maria"].booking is not None
            and outcomes["Kevin"].booking is None
            and outcomes["Omar"].booking is None
            and len(maria) == 5  # Venice's fare is high: her trip is insured; and paid
            and not kevin
            and not omar
            and resolved
            and not lena_held
            and insured
        )
        mark = "✔️" if len(maria) == 5 else "❌"
        ids = ", ".join(str(b.booking_id) for b in maria)
        print(f"{mark} Maria holds {len(maria)} active bookings: {ids}")
        mark = "✔️" if not kevin else "❌"
        print(f"{mark} Kevin holds {len(kevin)} active bookings ({len(kevin_rows)} cancelled)")
        mark = "✔️" if not omar else "❌"
        print(f"{mark} Omar holds {len(omar)} active bookings ({len(omar_rows)} cancelled)")
        if cars:
            maria_car, kevin_car = car_rentals("Maria"), car_rentals("Kevin")
            cars_ok = list(maria_car.values()) == ["BOOKED"]
            cars_ok &= list(kevin_car.values()) == ["CANCELLED"]
            ok &= cars_ok
            mark = "✔️" if cars_ok else "❌"
            print(
                f"{mark} car rental (Node.js): Maria's car {', '.join(maria_car.values())}, "
                f"Kevin's {', '.join(kevin_car.values())}"
            )
        mark = "✔️" if insured else "❌"
        print(
            f"{mark} insurer (another team, over Nexus): Maria's policy "
            f"{', '.join(str(p.booking_id) for p in policies['Maria'])} in force, Omar's "
            f"{', '.join(p.status.lower() for p in policies['Omar'])}"
        )
        mark = "✔️" if not lena_held and resolved else "❌"
        print(f"{mark} Lena holds {len(lena_held)} active bookings (her flight refunded by hand)")
        if encryption is not None:
            print("\n── What Temporal stored ──\n")
            ok &= await check_stored(handles["Kevin"], requests["Kevin"], codec)
        if keep:
            print(f"\nKept running: the Web UI at {UI}. Ctrl-C (or SIGTERM) stops everything.")
            if codec:
                print(
                    f"To read payloads there, sign in at {codec[0]}, then in the UI's codec "
                    "settings turn on 'Include cross-origin credentials' "
                    "and 'Use my browser setting'."
                )
            await asyncio.Event().wait()
        return ok
    finally:
        stop(worker)
        stop(insurer_worker)
        stop(car_rental)
        stop(server)
        if codec_server is not None:
            await codec_server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The trip-package saga end to end on a real Temporal server: Maria's "
        "trip succeeds, Kevin's is compensated, Lena's waits for a human until an operator "
        "resolves it. Starts a dev server if none answers at "
        "TEMPORAL_ADDRESS (default localhost:7233), and the worker; stops them at the end.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running for the Web UI until Ctrl-C (or SIGTERM)",
    )
    args = parser.parse_args()
    try:
        ok = asyncio.run(demo(args.keep))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM: stopped
        ok = True
    except Exception as err:
        print(f"demo failed: {err}", file=sys.stderr)
        ok = False
    print("\nDemo finished: " + ("everything as expected." if ok else "SOMETHING WENT WRONG."))
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # skip interpreter teardown (sdk-python issue 300)


if __name__ == "__main__":
    main()
