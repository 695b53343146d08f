"""Buy a trip package: book plane ticket, book hotel room, buy tourist tickets.

All three steps run in parallel. If one fails (say the hotel has no rooms), the
others are cancelled by their compensations and the workflow fails with
``SagaFailed``, whose message is the reason.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import TripBooking, TripRequest
    from activities.trip import (
        book_flight,
        book_hotel,
        buy_tickets,
        cancel_flight,
        cancel_hotel,
        cancel_tickets,
    )
    from temporal_saga import Saga

TASK_QUEUE = "trip-saga"


# A request that fails validation fails the workflow at once (naming the field)
# instead of retrying its first workflow task forever.
@workflow.defn(failure_exception_types=[ValidationError])
class BuyTripPackage:
    """The trip-package saga."""

    @workflow.run
    async def run(self, trip: TripRequest) -> TripBooking:
        # SagaStatus lets `temporal workflow list` find the sagas that need a human.
        # A booking call answers in well under 10 s; past that, retry elsewhere.
        saga = Saga(
            "buy trip package",
            search_attributes=True,
            start_to_close_timeout=timedelta(seconds=10),
        )
        plane = saga.step(
            "book plane ticket",
            book_flight,
            trip.flight(),
            compensate=cancel_flight,
            compensation_name="cancel plane ticket booking",
        )
        hotel = saga.step(
            "book hotel room",
            book_hotel,
            trip.hotel(),
            compensate=cancel_hotel,
            compensation_name="cancel hotel room booking",
        )
        tour = saga.step(
            "buy tourist tickets",
            buy_tickets,
            trip.attractions(),
            compensate=cancel_tickets,
            compensation_name="cancel tourist ticket reservations",
        )
        await saga.run()
        return TripBooking(flight=plane.result, hotel=hotel.result, tickets=tour.result)
