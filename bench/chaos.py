"""``make chaos``: trip sagas under faults; afterwards the world must be coherent.

    python -m bench.chaos [--sagas 1000] [--kills 6] [--no-server-restart] [--seed 1]
                          [--database sqlite|postgres]

Against a dev server with SQLite persistence (started and, once, restarted here),
with two ``worker.py`` processes that are killed with SIGKILL at random moments and
restarted, it runs trip sagas where about 20 % hit a service that is down (the saga
fails and compensates), about 30 % hit a flaky service (a failed first attempt, of
the step and of its compensation, that retries absorb), and some are cancelled at
random moments. About 10 % fail with a slow compensation and are cancelled while
they compensate (a third of them twice), about 5 % are group trips (two trip
packages as nested sagas) of which half get a child workflow terminated mid-flight,
and about 5 % need a human: their hotel is down and the airline refuses the refund,
so the saga waits (NEEDS_HUMAN) until an operator, at a random moment (workers are
being killed meanwhile), either refunds the flight by hand and resolves it, or
retries the cancel with a new argument (without the fault). Every trip pays by card,
and the payment provider's confirmation (an event step) comes early (before its step
is due) for about 10 %, twice for 10 %, too late for 5 %, never for 5 %: the last
two time out and undo the trip. About 5 % have a zombie attempt: a step's first
attempt stalls past its timeout and reaches its service after the retry booked (and,
another service being down, often after the saga cancelled that booking): the
services' barrier (``temporal_saga.barrier``) keeps it from booking again. About 10 %
go to Venice, whose fare buys travel insurance from the insurer, another team's
worker in its own namespace, over Nexus (its worker is SIGKILLed and restarted once
too). The
services keep their bookings in SQLite files, or (``--database postgres``) in a
PostgreSQL server started here (Debian's package), as in docker compose.
At the end it checks, from the services' databases and the workflows' outcomes:

- every saga is fully booked (it succeeded) or fully released (it did not), the
  insurance included (held by a trip to Venice that succeeded, by no other);
- no booking exists twice (one per saga, service and traveller);
- every workflow closed within the bound;
- nothing is left COMPENSATING or waiting for a human, and no saga needs one;
- each operator action was applied exactly once (the saga's own record of them).

It prints a table and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle

from activities.ledger import Booking, Ledger, Where, environment
from activities.models import City, TripRequest
from insurer.service import INSURER_NAMESPACE
from insurer.setup import ensure as ensure_insurer_endpoint
from temporal_saga import SagaFailed, SagaStatus
from temporal_saga._protocol import SAGA_STATUS_ATTRIBUTE
from temporal_saga.client import resolve_step, retry_step
from temporal_saga.encryption import EncryptionCodec
from workflows.group_trip import BookGroupTrip, GroupTripRequest
from workflows.trip import BuyTripPackage

from ._processes import ROOT, connect, free_port, server_command

SERVICES = ("airline", "hotel", "attractions")  # those whose faults are injected
# The services whose bookings must be all there or all gone: with the card's charge,
# which the payment provider confirms (an event step) promptly, early, twice, late or
# never (the last two: the saga times out and refunds it).
CHECKED = (*SERVICES, "payments")
CONFIRMATIONS = {"prompt": 70, "early": 10, "twice": 10, "late": 5, "never": 5}
RPCS = 100  # the dev server caps concurrent long polls per namespace


@dataclass
class Chaos:
    workdir: Path
    services: Where
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    insurer: subprocess.Popen[bytes] | None = None
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1

    def start_server(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.server = subprocess.Popen(
            server_command(self.port, self.workdir / "temporal.db", (INSURER_NAMESPACE,)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGKILL)
            self.server.wait()

    def start_worker(self, slot: int) -> None:
        log = (self.workdir / f"worker{slot}.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": self.address,
                **environment(self.services),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if slot < len(self.workers):
            self.workers[slot] = worker
        else:
            self.workers.append(worker)

    def start_insurer(self) -> None:
        """The insurer's worker (another team's, in its namespace)."""
        self.insurer = subprocess.Popen(
            [sys.executable, "-m", "insurer.worker"],
            cwd=ROOT,
            env={**os.environ, "TEMPORAL_ADDRESS": self.address, **environment(self.services)},
            stdout=(self.workdir / "insurer.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def kill_insurer(self) -> None:
        assert self.insurer is not None
        self.insurer.send_signal(signal.SIGKILL)
        self.insurer.wait()
        self.count("insurer's worker SIGKILL (Nexus)")

    def kill_worker(self, slot: int) -> None:
        self.workers[slot].send_signal(signal.SIGKILL)
        self.workers[slot].wait()
        self.count("worker SIGKILL")

    def stop_all(self) -> None:
        for worker in [*self.workers, *([self.insurer] if self.insurer else [])]:
            if worker.poll() is None:
                worker.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=20)
        self.stop_server()


def make_trip(
    rng: random.Random,
    traveller: str,
    chaos: Chaos,
    *,
    slow_undo: bool = False,
    no_refund: bool = False,
) -> TripRequest:
    faults: dict[str, str] = {}
    roll = rng.random()
    index = int(traveller[1:6])
    if no_refund:
        faults = {"hotel": "down", "airline": "no_refund"}
        chaos.count("hotel down, airline refuses the refund (needs a human)")
    elif slow_undo:
        # Fails, and one of its compensations takes a second: time to cancel it then.
        down, slow = rng.sample(SERVICES, 2)
        faults = {down: "down", slow: "slow"}
        chaos.count("service down, slow compensation (cancelled while compensating)")
    elif roll < 0.05:
        # A step's first attempt outlives its timeout and books after its retry did,
        # maybe after the saga cancelled that (another service is down).
        zombie, down = rng.sample(SERVICES, 2)
        faults = {zombie: "zombie", down: "down"}
        chaos.count("zombie attempt (books late), service down")
    elif roll < 0.2:
        faults[rng.choice(SERVICES)] = "down"
        chaos.count("service down (saga must compensate)")
    elif roll < 0.5:
        faults[rng.choice(SERVICES)] = "flaky"
        chaos.count("flaky service (retries absorb)")
    [confirmation] = rng.choices(list(CONFIRMATIONS), weights=list(CONFIRMATIONS.values()))
    cities: list[City] = ["Lisbon", "Paris", "Rome", "Venice"]
    destination = rng.choices(cities, [30, 30, 30, 10])[0]
    if destination == "Venice":
        chaos.count("to Venice: insured over Nexus (if it gets that far)")
    if confirmation != "prompt":
        chaos.count(f"payment confirmed {confirmation}")
    return TripRequest(
        traveller=traveller,
        passport="P1234567",
        confirmation=confirmation,  # type: ignore[arg-type]
        origin="Lisbon",
        destination=destination,  # Venice's fare buys insurance, over Nexus
        check_in=date(2027, 1, 1) + timedelta(days=index % 300),
        nights=1 + index % 3,
        faults=faults,  # type: ignore[arg-type]
    )


async def run(args: argparse.Namespace, services: Where | None = None) -> int:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="saga-chaos-"))
    chaos = Chaos(workdir, services or workdir / "services")
    began = time.monotonic()
    chaos.start_server()
    try:
        client = await connect(chaos.address)
        ensure_insurer_endpoint(chaos.address)
        for slot in range(2):
            chaos.start_worker(slot)
        chaos.start_insurer()
        queue = "trip-saga"
        rpcs = asyncio.Semaphore(RPCS)

        # What each saga is: a plain trip, a trip cancelled while compensating, or a
        # group trip (two nested trip sagas), one of whose children may be terminated.
        kinds = rng.choices(
            ["trip", "cancel undo", "group", "needs human"], weights=[80, 10, 5, 5], k=args.sagas
        )
        acted: dict[int, int] = {}  # operator actions answered, per saga
        travellers: list[list[str]] = []
        made: dict[int, list[TripRequest]] = {}  # each saga's trips

        async def start(index: int) -> WorkflowHandle[Any, Any]:
            workflow_id = f"chaos-{index}-{uuid.uuid4().hex[:6]}"
            if kinds[index] == "group":
                names = [f"G{index:05d}-{k}" for k in (1, 2)]
                group = GroupTripRequest(trips=[make_trip(rng, n, chaos) for n in names])
                travellers.append(names)
                made[index] = group.trips
                async with rpcs:
                    return await client.start_workflow(
                        BookGroupTrip.run, group, id=workflow_id, task_queue=queue
                    )
            name = f"T{index:05d}"
            trip = make_trip(
                rng,
                name,
                chaos,
                slow_undo=kinds[index] == "cancel undo",
                no_refund=kinds[index] == "needs human",
            )
            trips[index] = trip
            made[index] = [trip]
            travellers.append([name])
            async with rpcs:
                return await client.start_workflow(
                    BuyTripPackage.run, trip, id=workflow_id, task_queue=queue
                )

        handles: list[WorkflowHandle[Any, Any]] = []
        trips: dict[int, TripRequest] = {}

        # The operator: once a saga waits for a human (its SagaStatus says so), after a
        # random pause, refund the flight by hand and resolve, or retry the cancel with
        # the fault gone. Workers die meanwhile: the update must still apply once.
        async def operate(index: int) -> None:
            for _ in range(600):
                with contextlib.suppress(Exception):  # a restart, or not started yet
                    described = await handles[index].describe()
                    status = described.typed_search_attributes.get(SAGA_STATUS_ATTRIBUTE)
                    if status == SagaStatus.NEEDS_HUMAN:
                        break
                await asyncio.sleep(0.2)
            else:
                return  # never waited: the soak reports it as stuck
            await asyncio.sleep(rng.uniform(0, 4))
            trip = trips[index]
            for _ in range(60):
                try:
                    if rng.random() < 0.5:
                        airline = Ledger("airline", "", chaos.services)
                        for booking in airline.active(holder=trip.traveller):
                            airline.cancel(booking.key)
                        await resolve_step(
                            handles[index], "book plane ticket", note="refunded by hand"
                        )
                        chaos.count("operator: refunded by hand, resolved")
                    else:
                        fixed = trip.flight().model_copy(update={"fault": None})
                        answer = await retry_step(
                            handles[index], "book plane ticket", arg=fixed.model_dump(mode="json")
                        )
                        assert answer.endswith(": compensated"), answer
                        chaos.count("operator: retried with a new argument")
                    acted[index] = acted.get(index, 0) + 1
                    return
                except Exception:
                    await asyncio.sleep(1)  # the server restarting: ask again

        # Cancel a few at random moments.
        async def cancel_later(handle: WorkflowHandle[Any, Any]) -> None:
            await asyncio.sleep(rng.uniform(0, 5))
            with contextlib.suppress(Exception):
                await handle.cancel()
            chaos.count("cancellation requests")

        # Cancel those with a slow compensation while they compensate (some twice).
        # The SagaStatus search attribute says when, without needing a worker.
        async def cancel_while_compensating(index: int, twice: bool) -> None:
            await asyncio.sleep(2)  # its down service fails for good after about 3 s
            for _ in range(100):
                with contextlib.suppress(Exception):
                    described = await handles[index].describe()
                    status = described.typed_search_attributes.get(SAGA_STATUS_ATTRIBUTE)
                    if status == SagaStatus.COMPENSATING:
                        for _ in range(2 if twice else 1):
                            await handles[index].cancel()
                            chaos.count("cancels while compensating")
                        chaos.count("sagas cancelled while compensating")
                        return
                    if described.status != WorkflowExecutionStatus.RUNNING:
                        return  # too late: it closed first
                await asyncio.sleep(0.2)

        # Terminate one child of half the group trips, once it runs.
        async def terminate_child(index: int) -> None:
            number = rng.choice((1, 2))
            delay = rng.uniform(0, 0.5)
            child = f"{handles[index].id}/book group trip/trip of traveller {number}"
            for _ in range(100):
                with contextlib.suppress(Exception):  # not started yet, or a restart
                    handle = client.get_workflow_handle(child)
                    if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                        return  # it finished first
                    await asyncio.sleep(delay)
                    await handle.terminate("chaos")
                    chaos.count("child workflows terminated")
                    return
                await asyncio.sleep(0.2)

        # Watchers start with their saga: a saga may be done before the last one starts.
        cancels: list[asyncio.Task[None]] = []
        for index, kind in enumerate(kinds):
            handles.append(await start(index))
            if kind == "cancel undo":
                twice = rng.random() < 1 / 3
                cancels.append(asyncio.create_task(cancel_while_compensating(index, twice)))
            elif kind == "group" and rng.random() < 0.5:
                cancels.append(asyncio.create_task(terminate_child(index)))
            elif kind == "needs human":
                cancels.append(asyncio.create_task(operate(index)))
        cancels += [
            asyncio.create_task(cancel_later(h))
            for h in rng.sample(handles, k=max(1, args.sagas // 50))
        ]

        # Kill workers (and the server, once) while the sagas run.
        for kill in range(args.kills):
            await asyncio.sleep(rng.uniform(0.5, 3))
            slot = kill % 2
            chaos.kill_worker(slot)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            chaos.start_worker(slot)
            if kill == 0:
                chaos.kill_insurer()
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                chaos.start_insurer()
            if args.server_restart and kill == args.kills // 2:
                chaos.stop_server()
                chaos.count("server SIGKILL + restart")
                await asyncio.sleep(1)
                chaos.start_server()
                client = await connect(chaos.address)
                handles = [client.get_workflow_handle(h.id) for h in handles]
        await asyncio.gather(*cancels)

        # Wait for every saga to close, within the bound.
        deadline = time.monotonic() + args.bound
        statuses: dict[str, str] = {}
        sagas: dict[str, str] = {}
        took: dict[str, float] = {}
        recorded: dict[str, int] = {}  # operator actions the saga recorded

        async def outcome(handle: WorkflowHandle[Any, Any]) -> None:
            async with rpcs:
                while True:
                    try:
                        await asyncio.wait_for(handle.result(), deadline - time.monotonic())
                        break
                    except WorkflowFailureError as err:
                        failure = SagaFailed.from_error(err)
                        if failure is not None:
                            recorded[handle.id] = len(failure.state.actions)
                        break
                    except TimeoutError:
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            break
                        await asyncio.sleep(1)  # the server may be restarting
                description = await handle.describe()
            statuses[handle.id] = description.status.name if description.status else "?"
            attrs = description.typed_search_attributes
            sagas[handle.id] = next(
                (str(p.value) for p in attrs if p.key.name == "SagaStatus"), "?"
            )
            if description.close_time is not None:
                took[handle.id] = (description.close_time - description.start_time).total_seconds()

        await asyncio.gather(*(outcome(h) for h in handles))
    finally:
        chaos.stop_all()

    # Check the world.
    ledgers = {name: Ledger(name, "", chaos.services) for name in CHECKED}
    active = {name: {} for name in CHECKED}  # type: dict[str, dict[str, int]]
    for name, ledger in ledgers.items():
        for booking in ledger.active():
            active[name][str(booking.holder)] = active[name].get(str(booking.holder), 0) + 1
    insurance: dict[str, int] = {}  # policies in force, per traveller
    policies = Ledger("insurer", "", chaos.services).bookings()
    for policy in policies:
        if policy.status == "BOOKED":
            insurance[str(policy.holder)] = insurance.get(str(policy.holder), 0) + 1
    incoherent, duplicates, stuck, succeeded, compensated, cancelled = [], [], [], 0, 0, 0
    not_once: list[str] = []  # operator actions not applied exactly once
    for index, (handle, names) in enumerate(zip(handles, travellers, strict=True)):
        if kinds[index] == "needs human" and (
            acted.get(index) != 1 or recorded.get(handle.id) != 1
        ):
            answered, kept = acted.get(index), recorded.get(handle.id)
            not_once.append(f"{handle.id}: answered {answered}, recorded {kept}")
        traveller = ", ".join(names)
        status = statuses.get(handle.id, "?")
        held = [sum(active[name].get(t, 0) for t in names) for name in CHECKED]
        if any(active[name].get(t, 0) > 1 for name in CHECKED for t in names):
            duplicates.append(traveller)
        if status == WorkflowExecutionStatus.RUNNING.name or sagas.get(handle.id) not in (
            "SUCCEEDED",
            "COMPENSATED",
        ):
            stuck.append(f"{traveller} ({status}, {sagas.get(handle.id)})")
        if status == "COMPLETED":
            succeeded += 1
            ok = held == [len(names)] * len(CHECKED)
        else:
            compensated += status == "FAILED"
            cancelled += status == "CANCELED"
            ok = held == [0] * len(CHECKED)
        venice = sum(trip.destination == "Venice" for trip in made[index])
        insured = sum(insurance.get(t, 0) for t in names)
        if any(insurance.get(t, 0) > 1 for t in names):
            duplicates.append(traveller)
        ok &= insured == (venice if status == "COMPLETED" else 0)
        if not ok:
            incoherent.append(f"{traveller} ({status}: {held}, insured {insured})")

    rows = [
        ("sagas", args.sagas),
        ("payload encryption", "on" if EncryptionCodec.from_env() else "off"),
        ("services' database", "SQLite" if isinstance(chaos.services, Path) else "PostgreSQL"),
        *sorted(chaos.faults.items()),
        ("insurance policies sold over Nexus: in force / cancelled", _sold(policies)),
        ("succeeded (fully booked)", succeeded),
        ("failed, compensated (fully released)", compensated),
        ("cancelled, compensated (fully released)", cancelled),
        ("incoherent", len(incoherent)),
        ("duplicate bookings", len(duplicates)),
        ("stuck (not closed in bound, COMPENSATING or waiting for a human)", len(stuck)),
        ("operator actions not applied exactly once", len(not_once)),
        ("longest saga, start to close (s)", round(max(took.values(), default=0), 1)),
        ("duration (s)", round(time.monotonic() - began, 1)),
    ]
    print("| chaos soak | |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    for workflow_id in sorted(took, key=took.__getitem__)[-3:]:
        print(
            f"  slow: {workflow_id} ({kinds[int(workflow_id.split('-')[1])]}) "
            f"{took[workflow_id]:.1f} s"
        )
    for problem in (incoherent, duplicates, stuck, not_once):
        for line in problem[:10]:
            print("  !", line)
    if not (incoherent or duplicates or stuck or not_once):
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"(logs and databases kept in {workdir})")
    return 1


def _sold(policies: list[Booking]) -> str:
    kept = sum(p.status == "BOOKED" for p in policies)
    return f"{kept} / {len(policies) - kept}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=6, help="worker SIGKILLs")
    parser.add_argument("--no-server-restart", dest="server_restart", action="store_false")
    parser.add_argument("--bound", type=float, default=600, help="seconds for all to close")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    if args.database == "postgres":
        from tests.postgres import new_database, server

        with server() as conninfo:
            code = asyncio.run(run(args, new_database(conninfo)))
    else:
        code = asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown (sdk-python issue 300)


if __name__ == "__main__":
    main()
