"""The trip package's activities: book and cancel at the airline, hotel and attractions.

They are plain (synchronous) functions: the worker runs them in its thread pool.
Each one takes the step's idempotency key from ``temporal_saga.idempotency_key()``,
so retries never book twice and the cancel finds what its booking did.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from temporal_saga import idempotency_key

from .ledger import BookingRefused, Check, Ledger, nights
from .models import (
    City,
    Fault,
    FlightBooking,
    FlightRequest,
    HotelBooking,
    HotelRequest,
    TicketBooking,
    TicketRequest,
)

#: Rooms per night in each city's hotel (Venice's is small: one room).
HOTEL_ROOMS: dict[City, int] = {"Lisbon": 40, "Paris": 40, "Rome": 40, "Venice": 1}


def airline() -> Ledger:
    return Ledger("airline", "FL")


def hotel() -> Ledger:
    return Ledger("hotel", "HT")


def attractions() -> Ledger:
    return Ledger("attractions", "AT")


def _simulate(fault: Fault | None, service: str, *, undo: bool = False) -> None:
    """Misbehave as the request asks: 'down', 'flaky' or 'slow' (see ``Fault``).

    A cancel comes later than its booking: by then a service that was down is back
    after one more failed attempt (a compensation that could never succeed would
    keep the saga compensating forever, as it should).
    """
    if undo and fault == "down":
        fault = "flaky"
    if fault == "slow":
        for _ in range(10):
            activity.heartbeat()  # raises in this thread once the step is cancelled
            time.sleep(0.1)
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

    def check(conn: sqlite3.Connection) -> None:
        for night in nights(request.check_in, last_night):
            (taken,) = conn.execute(
                "SELECT COALESCE(SUM(quantity), 0) FROM bookings "
                "WHERE status = 'BOOKED' AND city = ? AND first_day <= ? AND last_day >= ?",
                (request.city, night.isoformat(), night.isoformat()),
            ).fetchone()
            if taken >= HOTEL_ROOMS[request.city]:
                raise BookingRefused("no available hotel rooms")

    return check


@activity.defn
def book_flight(request: FlightRequest) -> FlightBooking:
    """Book a seat on the flight."""
    _simulate(request.fault, "airline")
    try:
        booking_id = airline().book(
            idempotency_key(),
            holder=request.passenger,
            city=request.destination,
            first_day=request.date,
            last_day=request.date,
        )
    except BookingRefused as err:
        raise _refused(err) from err
    activity.logger.info("booked flight %s for %s", booking_id, request.passenger)
    return FlightBooking(
        booking_id=booking_id,
        passenger=request.passenger,
        route=f"{request.origin} → {request.destination}",
        date=request.date,
    )


@activity.defn
def cancel_flight(request: FlightRequest) -> None:
    """Cancel the flight booking of this step (nothing to cancel is fine)."""
    _simulate(request.fault, "airline", undo=True)
    airline().cancel(idempotency_key())
    activity.logger.info("cancelled flight of %s", request.passenger)


@activity.defn
def book_hotel(request: HotelRequest) -> HotelBooking:
    """Book a room for every night of the stay, if one is free each night."""
    _simulate(request.fault, "hotel")
    try:
        booking_id = hotel().book(
            idempotency_key(),
            holder=request.guest,
            city=request.city,
            first_day=request.check_in,
            last_day=request.check_in + timedelta(days=request.nights - 1),
            check=_rooms_left(request),
        )
    except BookingRefused as err:
        raise _refused(err) from err
    activity.logger.info("booked hotel %s for %s", booking_id, request.guest)
    return HotelBooking(
        booking_id=booking_id,
        guest=request.guest,
        city=request.city,
        check_in=request.check_in,
        nights=request.nights,
    )


@activity.defn
def cancel_hotel(request: HotelRequest) -> None:
    """Cancel the hotel booking of this step (nothing to cancel is fine)."""
    _simulate(request.fault, "hotel", undo=True)
    hotel().cancel(idempotency_key())
    activity.logger.info("cancelled hotel room of %s", request.guest)


@activity.defn
def buy_tickets(request: TicketRequest) -> TicketBooking:
    """Reserve attraction tickets for the day after arrival."""
    _simulate(request.fault, "attractions")
    try:
        booking_id = attractions().book(
            idempotency_key(),
            holder=request.holder,
            city=request.city,
            first_day=request.date,
            last_day=request.date,
            quantity=request.count,
        )
    except BookingRefused as err:
        raise _refused(err) from err
    activity.logger.info("reserved tickets %s for %s", booking_id, request.holder)
    return TicketBooking(
        booking_id=booking_id,
        holder=request.holder,
        city=request.city,
        date=request.date,
        count=request.count,
    )


@activity.defn
def cancel_tickets(request: TicketRequest) -> None:
    """Cancel the ticket reservation of this step (nothing to cancel is fine)."""
    _simulate(request.fault, "attractions", undo=True)
    attractions().cancel(idempotency_key())
    activity.logger.info("cancelled tickets of %s", request.holder)


ALL = [book_flight, cancel_flight, book_hotel, cancel_hotel, buy_tickets, cancel_tickets]
