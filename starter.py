"""Start a trip-package saga and print its trace as it unfolds.

    python starter.py --traveller Maria --passport X1234567 \\
        --origin Lisbon --destination Venice --check-in 2027-06-01 --nights 3

``--fault hotel=down`` (or airline/attractions, down/flaky/slow) makes a service fail,
to see the saga compensate; ``--fault airline=no_refund`` makes the airline refuse to
refund, so a failing trip waits for a human (``python -m temporal_saga resolve ...``
in another terminal). Exits 0 if the trip was bought, 1 if the saga failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from activities.models import TripBooking, TripRequest
from temporal_saga import SagaFailed, SagaState
from temporal_saga.client import (
    NotASaga,
    connect,
    follow_trace,
    load_state,
    render_trace,
    web_ui_url,
)
from workflows.trip import TASK_QUEUE, BuyTripPackage


@dataclass(frozen=True)
class TripOutcome:
    """How a trip saga ended."""

    workflow_id: str
    run_id: str
    state: SagaState
    booking: TripBooking | None
    failure: str | None


async def start_trip(
    client: Client,
    trip: TripRequest,
    *,
    workflow_id: str | None = None,
    task_queue: str = TASK_QUEUE,
) -> WorkflowHandle[Any, Any]:
    """Start the trip saga."""
    return await client.start_workflow(
        BuyTripPackage.run,
        trip,
        # No personal data in ids: Temporal stores ids in clear, even with encryption.
        id=workflow_id or f"trip-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        static_summary=(
            f"Trip package for {trip.traveller}: {trip.origin} → {trip.destination}, "
            f"{trip.nights} nights from {trip.check_in}"
        ),
    )


async def buy_trip(
    client: Client,
    trip: TripRequest,
    *,
    workflow_id: str | None = None,
    task_queue: str = TASK_QUEUE,
    on_line: Callable[[str], None] | None = None,
) -> tuple[WorkflowHandle[Any, Any], TripOutcome]:
    """Start the saga, report each new trace line to ``on_line``, and wait for the end."""
    handle = await start_trip(client, trip, workflow_id=workflow_id, task_queue=task_queue)
    return handle, await trip_outcome(handle, on_line=on_line)


async def trip_outcome(
    handle: WorkflowHandle[Any, Any], *, on_line: Callable[[str], None] | None = None
) -> TripOutcome:
    """Wait for a trip saga to end (reporting each new trace line to ``on_line``)."""
    with contextlib.suppress(NotASaga):  # it ended before its first step: see below
        async for line in follow_trace(handle):
            if on_line:
                on_line(line)
    booking: TripBooking | None = None
    failure: str | None = None
    try:
        booking = await handle.result()
    except WorkflowFailureError as err:
        saga = SagaFailed.from_error(err)
        failure = saga.message if saga else str(err.cause or err)
    try:
        state, _ = await load_state(handle)
    except NotASaga:
        raise RuntimeError(f"the trip failed before its first step: {failure}") from None
    assert handle.result_run_id is not None
    return TripOutcome(handle.id, handle.result_run_id, state, booking, failure)


def _fault(text: str) -> tuple[str, str]:
    service, _, kind = text.partition("=")
    return service, kind


async def main() -> int:
    parser = argparse.ArgumentParser(
        description="Start a trip-package saga and print its trace as it unfolds; exit 0 "
        "if the trip was bought, 1 if the saga failed (and was undone).",
    )
    parser.add_argument("--traveller", required=True, help="the traveller's name")
    parser.add_argument("--passport", required=True, help="the traveller's passport number")
    parser.add_argument("--origin", default="Lisbon", help="where the flight leaves from")
    parser.add_argument("--destination", default="Paris", help="where the trip goes")
    parser.add_argument(
        "--check-in",
        default=str(date.today() + timedelta(days=30)),
        help="the hotel's check-in date, YYYY-MM-DD (default: in 30 days)",
    )
    parser.add_argument("--nights", type=int, default=3, help="nights at the hotel")
    parser.add_argument("--tickets", type=int, default=1, help="tourist tickets to buy")
    parser.add_argument(
        "--car",
        action="store_true",
        help="also rent a car (the car-rental service: node services/car-rental/worker.js)",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        help="make a service misbehave: SERVICE=down|flaky|slow|no_refund (airline, "
        "hotel, attractions, car-rental); repeatable",
    )
    parser.add_argument("--id", help="workflow id (default: trip-<random>)")
    parser.add_argument(
        "--task-queue", default=TASK_QUEUE, help=f"the workers' queue (default {TASK_QUEUE})"
    )
    args = parser.parse_args()
    trip = TripRequest(
        traveller=args.traveller,
        passport=args.passport,
        origin=args.origin,
        destination=args.destination,
        check_in=args.check_in,
        nights=args.nights,
        tickets=args.tickets,
        car=args.car,
        faults=dict(args.fault),
    )
    client = await connect(connect_timeout=timedelta(seconds=10))
    handle, outcome = await buy_trip(
        client, trip, workflow_id=args.id, task_queue=args.task_queue, on_line=print
    )
    link = web_ui_url(client.namespace, handle.id, handle.result_run_id)
    print(f"\n{render_trace(outcome.state)}\n\nWeb UI: {link}")
    return 0 if outcome.booking else 1


if __name__ == "__main__":
    try:
        code = asyncio.run(main())
    except Exception as err:  # one line, not a traceback
        print(f"starter: {err}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown (sdk-python issue 300)
