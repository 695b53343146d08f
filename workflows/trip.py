"""Buy a trip package: book plane ticket, book hotel room, buy tourist tickets, and,
once they are booked, charge the card and wait for the payment provider's confirmation
(an event step) and, if the flight is expensive, buy travel insurance from the
insurer, another team's service behind a Nexus endpoint (``insurer/``); with
``car=True``, also rent a car, from the car-rental service, a Node.js worker
(``services/car-rental``) that serves ``bookCar`` and ``cancelCar`` on its own queue.

The three bookings run in parallel. If one fails (say the hotel has no rooms), the
others are cancelled by their compensations and the workflow fails with
``SagaFailed``, whose message is the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        InsuranceBooking,
        PaymentConfirmation,
        TripBooking,
        TripRequest,
    )
    from activities.trip import (
        INSURE_FLIGHTS_ABOVE,
        PAYMENT_CONFIRMATION_TIMEOUT,
        book_flight,
        book_hotel,
        buy_insurance,
        buy_tickets,
        cancel_flight,
        cancel_hotel,
        cancel_insurance,
        cancel_tickets,
        charge_card,
        refund_card,
    )
    from insurer.service import INSURER_ENDPOINT, InsuranceService
    from temporal_saga import Saga, StepStatus
    from temporal_saga.nexus import NexusOperation

TASK_QUEUE = "trip-saga"
#: The car-rental service's queue: its worker is written in JavaScript (Node.js).
CAR_RENTAL_TASK_QUEUE = "car-rental"


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
        car = None
        if trip.car:
            # Another language's step: an activity named as that worker registers it,
            # on its queue; its compensation runs on the same queue. Only a trip that
            # asks for a car has the step, so trips that did not replay as they ran.
            car = saga.step(
                "rent a car",
                "bookCar",
                trip.car_rental(),
                compensate="cancelCar",
                compensation_name="cancel car rental",
                task_queue=CAR_RENTAL_TASK_QUEUE,
                # The service heartbeats while it works: a worker lost mid-call is
                # noticed in seconds, not at the 10 s timeout.
                heartbeat_timeout=timedelta(seconds=2),
            )
        # A conditional step: once everything is booked, insure an expensive flight.
        # Added while trip sagas were running, hence since=: a saga that had passed
        # this point before the change replays without it. The insurer then became
        # another team (its own namespace, behind a Nexus endpoint): sagas started
        # before that buy from the activity, as they did.
        buy_insurance_from: NexusOperation | Callable[..., InsuranceBooking] = buy_insurance
        cancel_insurance_at: NexusOperation | Callable[..., None] = cancel_insurance
        if workflow.patched("trip-insurer-nexus"):
            buy_insurance_from = NexusOperation(
                INSURER_ENDPOINT, InsuranceService, InsuranceService.buy
            )
            cancel_insurance_at = NexusOperation(
                INSURER_ENDPOINT, InsuranceService, InsuranceService.cancel
            )
        insurance = saga.step(
            "buy travel insurance",
            buy_insurance_from,
            lambda: trip.insurance(plane.result),
            after=[plane, hotel, tour],
            since="trip-insurance",
            when=lambda: plane.result.price > INSURE_FLIGHTS_ABOVE,
            compensate=cancel_insurance_at,
            compensation_name="cancel travel insurance",
        )
        # The payment, added later too: once everything is booked the card is charged,
        # and the provider confirms the charge a moment later by calling the saga
        # back (the event "payment"); no confirmation in time undoes the trip.
        charge = saga.step(
            "charge card",
            charge_card,
            lambda: trip.payment(plane.result),
            after=[plane, hotel, tour],
            since="trip-payment",
            compensate=refund_card,
            compensation_name="refund card",
        )
        confirmed = saga.event(
            "payment confirmed",
            "payment",
            timeout=PAYMENT_CONFIRMATION_TIMEOUT,
            result_type=PaymentConfirmation,
            after=[charge],
            since="trip-payment",
        )
        await saga.run()
        insured = insurance.outcome is StepStatus.SUCCEEDED
        return TripBooking(
            flight=plane.result,
            hotel=hotel.result,
            tickets=tour.result,
            insurance=insurance.result if insured else None,
            car=car.result if car is not None else None,
            payment=confirmed.result if confirmed.outcome is StepStatus.SUCCEEDED else None,
        )
