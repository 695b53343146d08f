"""Book a group trip: one trip package per traveller, each a nested saga.

Every traveller's trip runs as a child workflow (``BuyTripPackage``, a saga of its
own that undoes itself when it fails). If one traveller's trip cannot be booked, the
others' trips, which succeeded, are undone by ``cancel_trip_package``; a trip whose
child workflow was terminated (or timed out) may have booked anything, so it is
undone the same way.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import TripBooking, TripRequest
    from activities.trip import cancel_trip_package
    from temporal_saga import Saga

    from .trip import BuyTripPackage


class GroupTripRequest(BaseModel):
    """The travellers' trips, booked together or not at all."""

    trips: list[TripRequest] = Field(min_length=1, max_length=20)


@workflow.defn(failure_exception_types=[ValidationError])
class BookGroupTrip:
    """The group-trip saga: all travellers' trip packages, or none."""

    @workflow.run
    async def run(self, group: GroupTripRequest) -> list[TripBooking]:
        saga = Saga("book group trip", search_attributes=True)
        trips = [
            saga.step(
                f"trip of traveller {number}",  # public text: no names here
                BuyTripPackage.run,
                trip,
                compensate=cancel_trip_package,
                compensation_name=f"cancel trip of traveller {number}",
            )
            for number, trip in enumerate(group.trips, start=1)
        ]
        await saga.run()
        return [trip.result for trip in trips]
