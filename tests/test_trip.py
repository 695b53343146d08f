"""The trip-package example end to end: worker.py as its own process, real SQLite services."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import random
import re
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

import trip_api
from activities.ledger import Ledger, Where
from activities.models import TripBooking
from activities.trip import ZOMBIE_STALL
from temporal_saga import SagaFailed, SagaState, SagaStatus, StepStatus
from temporal_saga.client import load_state, render_trace
from workflows.trip import BuyTripPackage

from .conftest import temporal_cli
from .helpers import active, buy, cli, held, trip

ROOT = Path(__file__).resolve().parent.parent
# A trip to Venice, bought: every service holds one booking (its fare is insured).
EVERYTHING = held(airline=1, hotel=1, attractions=1, insurer=1, payments=1)


# The services on SQLite files (the default) and on PostgreSQL (docker compose's).
BOTH_DATABASES = pytest.mark.parametrize("services", ["sqlite", "postgres"], indirect=True)


@BOTH_DATABASES
async def test_trip_succeeds_and_books_all_three(
    client: Client, trip_worker: str, services: Where, tmp_path: Path
) -> None:
    booking = await buy(client, trip_worker, trip("Maria"))
    assert booking.hotel.city == "Venice" and booking.tickets.count == 2
    assert booking.flight.booking_id.startswith("FL-")
    # Venice's fare is above the insurance threshold: the conditional step ran.
    assert booking.flight.price == 540 and booking.insurance is not None
    assert booking.insurance.premium == 54
    # The payment provider confirmed the charge by calling the saga back (an event step).
    assert booking.payment is not None and booking.payment.amount == 540 + 2 * 100
    assert active(services, "Maria") == EVERYTHING
    # The insurer is another team: its own worker sold the policy, through Nexus.
    assert "insurer: policy IN-" in (tmp_path / "worker.insurer.log").read_text()


async def test_a_cheap_flight_is_not_insured_and_the_trace_says_so(
    client: Client, trip_worker: str, services: Path
) -> None:
    handle = await client.start_workflow(
        BuyTripPackage.run,
        trip("Rui", destination="Paris"),
        id=f"trip-{uuid.uuid4()}",
        task_queue=trip_worker,
    )
    booking = await handle.result()
    assert booking.flight.price == 180 and booking.insurance is None
    assert active(services, "Rui") == held(airline=1, hotel=1, attractions=1, payments=1)
    state, _ = await load_state(handle)
    assert "⏭️ buy travel insurance (condition not met)" in render_trace(state)
    # since= is decided before when=: the history records that this saga has the step
    # (the patch), then skips it for its fare.
    history = await handle.fetch_history()
    patches = [
        payload.data
        for e in history.events
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
        for payload in e.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    assert [p for p in patches if b"trip-insurance" in p], patches


@BOTH_DATABASES
async def test_full_hotel_cancels_the_flight_and_tickets(
    env: WorkflowEnvironment, client: Client, trip_worker: str, services: Where
) -> None:
    await buy(client, trip_worker, trip("Maria"))  # Venice has one room: Maria takes it
    kevin = f"trip-{uuid.uuid4()}"
    with pytest.raises(WorkflowFailureError) as caught:
        await client.execute_workflow(
            BuyTripPackage.run,
            trip("Kevin", check_in=date(2027, 6, 2)),
            id=kevin,
            task_queue=trip_worker,
        )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None
    assert failure.failed_step == "book hotel room"
    assert failure.reason == "no available hotel rooms"
    assert failure.state.status is SagaStatus.COMPENSATED
    # Kevin's insurance never started: it waits for the hotel, which failed.
    assert failure.state.step("buy travel insurance").status is StepStatus.SKIPPED
    assert active(services, "Kevin") == held()
    assert active(services, "Maria") == EVERYTHING
    # The picture of Kevin's trip: every step in its state, the undo order, the arrows.
    shown = cli(env, "show", kevin, "--graph", "svg")
    assert shown.returncode == 3, shown.stderr  # compensated
    drawn = steps_drawn(shown.stdout)
    assert drawn == {
        "book plane ticket": ("undone", "succeeded; undone, 1st (cancel plane ticket booking)"),
        "book hotel room": ("failed", "failed: no available hotel rooms"),
        "buy tourist tickets": (
            "undone",
            "succeeded; undone, 2nd (cancel tourist ticket reservations)",
        ),
        "buy travel insurance": ("waiting", "skipped"),
        "charge card": ("waiting", "skipped"),
        "payment confirmed": ("waiting", "skipped; waits for event 'payment'"),
    }, drawn
    # The insurance and the charge wait for the other three; the payment for the charge.
    assert shown.stdout.count("marker-end") == 7
    assert ": COMPENSATED (book hotel room failed: no available hotel rooms)</text>" in shown.stdout
    # The README's picture (the same command in `make demo`, whose Kevin also rents a
    # car): these steps, each in the same state.
    readme = steps_drawn((ROOT / "docs" / "kevin-trip.svg").read_text())
    assert {name: readme[name][0] for name in drawn} == {n: k for n, (k, _) in drawn.items()}
    mermaid = cli(env, "show", kevin, "--graph", "mermaid").stdout
    assert mermaid.startswith("---\ntitle: saga ") and "\nflowchart LR\n" in mermaid
    assert mermaid.count(" --> ") == 7 and ":::failed" in mermaid and ":::undone" in mermaid


@pytest.mark.parametrize("confirmation", ["early", "twice", "late", "never"])
async def test_the_payment_provider_s_confirmation_early_twice_late_or_never(
    client: Client, trip_worker: str, services: Path, confirmation: str
) -> None:
    """The provider confirms before the charge's activity ended (kept), twice (counted
    once), after the saga stopped waiting (refused) or never: the trip is bought once,
    or undone."""
    traveller = f"Pay{confirmation.title()}"
    request = trip(traveller, destination="Paris", confirmation=confirmation)
    if confirmation in ("early", "twice"):
        booking = await buy(client, trip_worker, request)
        assert booking.payment is not None and booking.payment.amount == 180 + 200
        assert active(services, traveller) == held(airline=1, hotel=1, attractions=1, payments=1)
        return
    with pytest.raises(WorkflowFailureError) as caught:
        await buy(client, trip_worker, request)
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.reason == "no 'payment' event within 5 seconds"
    assert failure.failed_step == "payment confirmed"
    assert failure.state.step("charge card").status is StepStatus.COMPENSATED  # refunded
    assert active(services, traveller) == held()


def steps_drawn(svg: str) -> dict[str, tuple[str, str]]:
    """Each step box of ``show --graph svg``, by name: its kind and what it says."""
    drawn = {}
    for kind, title in re.findall(r'<g class="step ([a-z-]+)"><title>([^<]*)</title>', svg):
        name, says = html.unescape(title).split(": ", 1)
        drawn[name] = (kind, says)
    return drawn


async def test_airline_down_fails_after_retries_and_releases_everything(
    client: Client, trip_worker: str, services: Path
) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await buy(client, trip_worker, trip("Ana", faults={"airline": "down"}))
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None
    assert failure.failed_step == "book plane ticket"
    assert failure.reason == "airline is unavailable"
    flight = failure.state.step("book plane ticket")
    assert flight.status is StepStatus.FAILED and flight.compensation is None
    assert active(services, "Ana") == held()


async def test_flaky_service_is_absorbed_by_retries(
    client: Client, trip_worker: str, services: Path
) -> None:
    await buy(client, trip_worker, trip("Lea", faults={"hotel": "flaky"}, destination="Rome"))
    assert active(services, "Lea") == held(airline=1, hotel=1, attractions=1, payments=1)


README_INPUT = (
    '{"traveller": "Maria", "passport": "YA1234567", "origin": "Lisbon", '
    '"destination": "Paris", "check_in": "2027-06-01", "nights": 3}'
)


async def test_saga_started_from_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, trip_worker: str, services: Path
) -> None:
    assert README_INPUT in (ROOT / "docs" / "operations.md").read_text(), "docs must show it"
    workflow_id = f"trip-cli-{uuid.uuid4()}"
    started = temporal_cli(
        env,
        "workflow",
        "start",
        "--type",
        "BuyTripPackage",
        "--task-queue",
        trip_worker,
        "--workflow-id",
        workflow_id,
        "--input",
        README_INPUT,
    )
    assert started.returncode == 0, started.stderr
    booking = await client.get_workflow_handle(workflow_id, result_type=TripBooking).result()
    assert booking.hotel.city == "Paris" and booking.hotel.nights == 3
    assert active(services, "Maria") == held(airline=1, hotel=1, attractions=1, payments=1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"passport": None}, "passport"),
        ({"nights": -2}, "nights"),
        ({"destination": "Atlantis"}, "destination"),
    ],
)
async def test_invalid_trip_fails_at_once_naming_the_field(
    client: Client, trip_worker: str, services: Path, change: dict[str, object], field: str
) -> None:
    raw = json.loads(trip("Bad").model_dump_json()) | change
    raw = {k: v for k, v in raw.items() if v is not None}
    handle = await client.start_workflow(
        "BuyTripPackage", raw, id=f"trip-bad-{uuid.uuid4()}", task_queue=trip_worker
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await asyncio.wait_for(handle.result(), timeout=10)
    cause = caught.value.cause
    assert field in str(cause) and "validation error for TripRequest" in str(cause)
    assert active(services, "Bad") == held()


async def test_saga_state_of_a_trip(client: Client, trip_worker: str) -> None:
    handle = await client.start_workflow(
        BuyTripPackage.run, trip("Zoe"), id=f"trip-{uuid.uuid4()}", task_queue=trip_worker
    )
    await handle.result()
    state = await handle.query("saga_state", result_type=SagaState)
    assert [s.name for s in state.steps] == [
        "book plane ticket",
        "book hotel room",
        "buy tourist tickets",
        "buy travel insurance",
        "charge card",
        "payment confirmed",
    ]


async def test_cancellation_storm_leaves_nothing_booked(
    client: Client, trip_worker: str, services: Path
) -> None:
    """100 sagas, each with one slow service, cancelled at random moments."""
    rng = random.Random(7)
    travellers = [f"Guest{i:03d}" for i in range(100)]
    handles = []
    for i, name in enumerate(travellers):
        slow = rng.choice(["airline", "hotel", "attractions"])
        request = trip(
            name,
            destination=("Paris", "Rome", "Lisbon")[i % 3],
            check_in=date(2027, 3, 1 + i % 28),
            faults={slow: "slow"},
        )
        handles.append(
            await client.start_workflow(
                BuyTripPackage.run, request, id=f"trip-{uuid.uuid4()}", task_queue=trip_worker
            )
        )

    async def cancel_later(handle: WorkflowHandle[Any, Any]) -> str:
        await asyncio.sleep(rng.uniform(0, 2.0))  # most sagas take 1-2 s here
        with contextlib.suppress(RPCError):  # it may have finished already
            await handle.cancel()
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return (await handle.describe()).status.name  # type: ignore[union-attr]

    endings = await asyncio.gather(*(cancel_later(h) for h in handles))
    assert set(endings) <= {"CANCELED", "COMPLETED"}
    assert endings.count("CANCELED") >= len(handles) // 5, endings.count("CANCELED")
    for name, ending in zip(travellers, endings, strict=True):
        held = sum(active(services, name).values())
        assert held == (4 if ending == "COMPLETED" else 0), (name, ending, held)  # paid too


async def test_the_http_endpoint_answers_once_the_hotel_is_booked(
    client: Client, trip_worker: str, services: Path
) -> None:
    """POST /trips answers within the request (the early answer), while the rest of
    the trip finishes in the background; a saga that fails first answers why."""
    api = TestClient(TestServer(trip_api.app(client, trip_worker)))
    await api.start_server()
    try:
        maria = json.loads(trip("Maria").model_dump_json())
        answered = await api.post("/trips", json=maria)
        assert answered.status == 201, await answered.text()
        body = await answered.json()
        assert body["status"] == "booked" and body["hotel"]["city"] == "Venice"
        workflow_id = body["trip"].removeprefix("/trips/")
        handle = client.get_workflow_handle(workflow_id, result_type=TripBooking)
        # Answered before the saga ended: the payment's confirmation comes later.
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        booking = await handle.result()
        assert booking.payment is not None
        shown = await (await api.get(body["trip"])).json()
        assert "✔️ end saga (success)" in shown["trace"]
        # Venice's only room is Maria's: Kevin's request gets the reason at once.
        kevin = json.loads(trip("Kevin").model_dump_json())
        refused = await api.post("/trips", json=kevin)
        assert refused.status == 409
        assert (await refused.json())["reason"] == "no available hotel rooms"
        invalid = await api.post("/trips", json={**kevin, "nights": 0})
        assert invalid.status == 400
        assert (await invalid.json())["problems"] == [
            "nights: Input should be greater than or equal to 1"
        ]
        assert (await api.get("/trips/no-such-trip")).status == 404
    finally:
        await api.close()
    assert active(services, "Maria") == EVERYTHING


@BOTH_DATABASES
async def test_a_zombie_booking_attempt_books_nothing_behind_the_saga(
    client: Client, trip_worker: str, services: Where
) -> None:
    """The hotel's first attempt stalls past its 10 s timeout; the retry books; the
    airline is down, so the saga cancels that booking; then the stalled attempt reaches
    the hotel, which the barrier keeps from booking again."""
    request = trip("Zed", destination="Paris", faults={"hotel": "zombie", "airline": "down"})
    with pytest.raises(WorkflowFailureError):
        await buy(client, trip_worker, request)
    await asyncio.sleep(ZOMBIE_STALL - 8)  # the stalled attempt reaches the hotel
    assert active(services, "Zed") == held()
    [hotel] = Ledger("hotel", "", services).bookings(holder="Zed")
    assert hotel.status == "CANCELLED"  # booked once (by the retry), cancelled once
