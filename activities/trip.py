"""The trip package's activities: book and cancel at the airline, hotel, attractions
and insurer; charge and refund the card at the payment provider, which confirms each
charge a moment later by calling the saga back (its ``payment`` event).

They are plain (synchronous) functions, which the worker runs in its thread pool,
but for ``charge_card``, which needs the worker's client to call the saga back.
Each is declared ``no_thread_cancel_exception=True``: by default the SDK raises a
cancellation into a thread at any bytecode, which could interrupt a ledger
transaction half-way and leave its SQLite lock held; instead a slow call checks
``activity.is_cancelled()`` where stopping is safe.
Each one takes the step's idempotency key from ``temporal_saga.idempotency_key()``,
so retries never book twice and the cancel finds what its booking did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory, CancelledError

from temporal_saga import idempotency_key

from .ledger import BookingRefused, Check, Ledger, Transaction, nights
from .models import (
    City,
    Fault,
    FlightBooking,
    FlightRequest,
    HotelBooking,
    HotelRequest,
    InsuranceBooking,
    InsuranceRequest,
    PaymentConfirmation,
    PaymentRequest,
    TicketBooking,
    TicketRequest,
    TripRequest,
)

#: Rooms per night in each city's hotel (Venice's is small: one room).
HOTEL_ROOMS: dict[City, int] = {"Lisbon": 40, "Paris": 40, "Rome": 40, "Venice": 1}
#: One-way fares to each city, in euros (a toy price list).
FARES: dict[City, int] = {"Lisbon": 90, "Paris": 180, "Rome": 260, "Venice": 540}
#: A trip whose flight costs more than this gets travel insurance (the trip saga's
#: conditional step); the premium is a tenth of the fare.
INSURE_FLIGHTS_ABOVE = 500
#: How long a "zombie" first attempt stalls: past the steps' 10 s start-to-close timeout.
ZOMBIE_STALL = 12
#: How long the trip saga waits for the payment provider's confirmation of a charge.
PAYMENT_CONFIRMATION_TIMEOUT = timedelta(seconds=5)
#: When the provider confirms, in seconds after the charge, for each kind of
#: confirmation a request asks for (0: before the charge's activity even ends).
_CONFIRMS_AFTER: dict[str, tuple[float, ...]] = {
    "prompt": (0.5,),
    "early": (0,),
    "twice": (0.5, 1),
    "late": (PAYMENT_CONFIRMATION_TIMEOUT.total_seconds() + 2,),
    "never": (),
}


def airline() -> Ledger:
    return Ledger("airline", "FL")


def hotel() -> Ledger:
    return Ledger("hotel", "HT")


def attractions() -> Ledger:
    return Ledger("attractions", "AT")


def insurer() -> Ledger:
    return Ledger("insurer", "IN")


def payments() -> Ledger:
    return Ledger("payments", "PM")


def _simulate(fault: Fault | None, service: str, *, undo: bool = False) -> None:
    """Misbehave as the request asks: 'down', 'flaky', 'slow', 'no_refund', 'zombie'
    (see ``Fault``).

    A cancel comes later than its booking: by then a service that was down is back
    after one more failed attempt (a compensation that could never succeed would
    keep the saga compensating forever, as it should).
    """
    if undo and fault == "down":
        fault = "flaky"
    if undo and fault == "no_refund":
        raise ApplicationError(
            f"{service}: refund refused after departure", type="RefundRefused", non_retryable=True
        )
    if fault == "slow":
        for _ in range(10):
            activity.heartbeat()
            if activity.is_cancelled():  # checked here, at a safe point (see ALL)
                raise CancelledError("cancelled while waiting for the service")
            time.sleep(0.1)
    if fault == "zombie" and not undo and activity.info().attempt == 1:
        time.sleep(ZOMBIE_STALL)  # timed out meanwhile: a retry runs; this goes on later
    if fault == "down" or (fault == "flaky" and activity.info().attempt == 1):
        raise ApplicationError(f"{service} is unavailable", type="ServiceUnavailable")


def _refused(err: BookingRefused) -> ApplicationError:
    # An expected business outcome, not a fault: BENIGN keeps it out of the error logs.
    return ApplicationError(
        str(err),
        type="BookingRefused",
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )


def _rooms_left(request: HotelRequest) -> Check:
    last_night = request.check_in + timedelta(days=request.nights - 1)

    def check(conn: Transaction) -> None:
        for night in nights(request.check_in, last_night):
            (taken,) = conn.execute(
                "SELECT COALESCE(SUM(quantity), 0) FROM bookings "
                "WHERE status = 'BOOKED' AND city = ? AND first_day <= ? AND last_day >= ?",
                (request.city, night.isoformat(), night.isoformat()),
            ).fetchone()
            if taken >= HOTEL_ROOMS[request.city]:
                raise BookingRefused("no available hotel rooms")

    return check


def _book(
    ledger: Ledger,
    fault: Fault | None,
    *,
    holder: str,
    city: str,
    first_day: date,
    last_day: date,
    quantity: int = 1,
    check: Check | None = None,
) -> str:
    """Book at ``ledger`` under this step's idempotency key; returns the booking id."""
    _simulate(fault, ledger.service)
    try:
        booking_id = ledger.book(
            idempotency_key(),
            holder=holder,
            city=city,
            first_day=first_day,
            last_day=last_day,
            quantity=quantity,
            check=check,
        )
    except BookingRefused as err:
        raise _refused(err) from err
    activity.logger.info("%s: booked %s for %s", ledger.service, booking_id, holder)
    return booking_id


def _cancel(ledger: Ledger, fault: Fault | None, holder: str) -> None:
    """Cancel this step's booking at ``ledger`` (nothing to cancel is fine)."""
    _simulate(fault, ledger.service, undo=True)
    ledger.cancel(idempotency_key())
    activity.logger.info("%s: cancelled the booking of %s", ledger.service, holder)


@activity.defn(no_thread_cancel_exception=True)
def book_flight(request: FlightRequest) -> FlightBooking:
    """Book a seat on the flight."""
    booking_id = _book(
        airline(),
        request.fault,
        holder=request.passenger,
        city=request.destination,
        first_day=request.date,
        last_day=request.date,
    )
    route = f"{request.origin} → {request.destination}"
    return FlightBooking(
        booking_id=booking_id,
        passenger=request.passenger,
        route=route,
        date=request.date,
        price=FARES[request.destination],
    )


@activity.defn(no_thread_cancel_exception=True)
def cancel_flight(request: FlightRequest) -> None:
    """Cancel the flight booking of this step (nothing to cancel is fine)."""
    _cancel(airline(), request.fault, request.passenger)


@activity.defn(no_thread_cancel_exception=True)
def book_hotel(request: HotelRequest) -> HotelBooking:
    """Book a room for every night of the stay, if one is free each night."""
    booking_id = _book(
        hotel(),
        request.fault,
        holder=request.guest,
        city=request.city,
        first_day=request.check_in,
        last_day=request.check_in + timedelta(days=request.nights - 1),
        check=_rooms_left(request),
    )
    return HotelBooking(booking_id=booking_id, **request.model_dump(exclude={"fault"}))


@activity.defn(no_thread_cancel_exception=True)
def cancel_hotel(request: HotelRequest) -> None:
    """Cancel the hotel booking of this step (nothing to cancel is fine)."""
    _cancel(hotel(), request.fault, request.guest)


@activity.defn(no_thread_cancel_exception=True)
def buy_tickets(request: TicketRequest) -> TicketBooking:
    """Reserve attraction tickets for the day after arrival."""
    booking_id = _book(
        attractions(),
        request.fault,
        holder=request.holder,
        city=request.city,
        first_day=request.date,
        last_day=request.date,
        quantity=request.count,
    )
    return TicketBooking(booking_id=booking_id, **request.model_dump(exclude={"fault"}))


@activity.defn(no_thread_cancel_exception=True)
def cancel_tickets(request: TicketRequest) -> None:
    """Cancel the ticket reservation of this step (nothing to cancel is fine)."""
    _cancel(attractions(), request.fault, request.holder)


@activity.defn(no_thread_cancel_exception=True)
def buy_insurance(request: InsuranceRequest) -> InsuranceBooking:
    """Insure the trip, for a tenth of its flight's fare."""
    booking_id = _book(
        insurer(),
        None,
        holder=request.holder,
        city=request.city,
        first_day=request.start,
        last_day=request.end,
    )
    return InsuranceBooking(
        booking_id=booking_id, holder=request.holder, premium=request.flight_price // 10
    )


@activity.defn(no_thread_cancel_exception=True)
def cancel_insurance(request: InsuranceRequest) -> None:
    """Cancel the insurance of this step (nothing to cancel is fine)."""
    _cancel(insurer(), None, request.holder)


@activity.defn
async def charge_card(request: PaymentRequest) -> str:
    """Charge the card (once per idempotency key); the provider confirms the charge
    later, as its webhook would: it sends the saga the ``payment`` event."""
    charge_id = await asyncio.to_thread(  # the ledger blocks: off the event loop
        _book,
        payments(),
        None,
        holder=request.payer,
        city=request.city,
        first_day=request.date,
        last_day=request.date,
    )
    info = activity.info()
    assert info.workflow_id is not None  # a saga's step: a workflow's activity
    confirm = _Confirm(
        activity.client().get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id),
        PaymentConfirmation(charge_id=charge_id, amount=request.amount),
    )
    for delay in _CONFIRMS_AFTER[request.confirmation]:
        if delay == 0:
            await confirm()  # early: the saga keeps it until its step is due
        else:
            _later(delay, confirm)
    return charge_id


@activity.defn(no_thread_cancel_exception=True)
def refund_card(request: PaymentRequest) -> None:
    """Refund this step's charge (nothing to refund is fine)."""
    _cancel(payments(), None, request.payer)


class _Confirm:
    """The payment provider's call back to a trip saga: the ``payment`` event, sent
    under the charge's id, so a confirmation sent twice counts once."""

    def __init__(self, handle: WorkflowHandle[Any, Any], confirmation: PaymentConfirmation):
        self.handle, self.confirmation = handle, confirmation

    async def __call__(self) -> None:
        # Imported here: the workflows import this module, and need no client tooling.
        from temporal_saga.client import ActionRejected, send_event

        charge = self.confirmation.charge_id
        try:
            answer = await send_event(
                self.handle,
                "payment",
                self.confirmation.model_dump(mode="json"),
                id=charge,
                by="payment provider",
            )
        except ActionRejected as err:  # the saga stopped waiting: it refunds the charge
            activity.logger.warning("payments: %s not confirmed: %s", charge, err)
            return
        activity.logger.info("payments: %s confirmed: %s", charge, answer)


_PENDING: set[asyncio.Task[None]] = set()  # confirmations on their way (kept referenced)


def _later(delay: float, confirm: _Confirm) -> None:
    async def send() -> None:
        await asyncio.sleep(delay)
        try:
            await confirm()
        except Exception as err:  # the provider retries nothing: the saga times out
            logging.getLogger(__name__).warning("payments: confirmation lost: %r", err)

    task = asyncio.create_task(send())
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


@activity.defn(no_thread_cancel_exception=True)
def cancel_trip_package(trip: TripRequest) -> None:
    """Undo a whole trip package that ran as a nested saga (a step of a group trip).

    The nested saga is a child workflow whose id is this step's id (see
    ``temporal_saga.idempotency_key``), and every booking it made is keyed under
    that id, so one call per service releases them all, and refuses any of its
    bookings still on the way (from a child that was terminated mid-flight).
    """
    info = activity.info()
    child = f"{info.workflow_id}/{info.activity_id.removesuffix('/compensate')}/"
    for ledger in (airline(), hotel(), attractions(), insurer(), payments()):
        ledger.cancel_all(child)
    activity.logger.info("cancelled the trip package of %s", trip.traveller)


ALL = [
    book_flight,
    cancel_flight,
    book_hotel,
    cancel_hotel,
    buy_tickets,
    cancel_tickets,
    buy_insurance,
    cancel_insurance,
    charge_card,
    refund_card,
    cancel_trip_package,
]
