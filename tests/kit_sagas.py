"""Sagas for the testing kit's own tests: their activities are only ever faked.

``KitSaga``: book flight, book hotel (after the flight unless ``parallel``), then pay,
within ``deadline_hours``; the payment answers within ``pay_timeout`` seconds or is
asked again after ``retry_hours``. ``KitSagaRenamed`` is the same workflow type with
the hotel step renamed (a change that breaks sagas in flight).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga


class Booking(BaseModel):
    item: str
    nights: int = 1


@activity.defn
async def book(booking: Booking) -> str:
    raise NotImplementedError("faked in the tests")


@activity.defn
async def cancel(booking: Booking) -> None:
    raise NotImplementedError("faked in the tests")


@activity.defn
async def pay(amount: int) -> str:
    raise NotImplementedError("faked in the tests")


class KitInput(BaseModel):
    deadline_hours: float | None = 2
    pay_timeout: float = 1
    retry_hours: float = 1
    pay_attempts: int = 0  # 0: until the deadline
    parallel: bool = False
    hotel_step: str = "book hotel"


def kit_saga(inp: KitInput) -> Saga:
    deadline = timedelta(hours=inp.deadline_hours) if inp.deadline_hours else None
    saga = Saga("kit", timeout=deadline, search_attributes=True)
    flight = saga.step("book flight", book, Booking(item="flight"), compensate=cancel)
    hotel = saga.step(
        inp.hotel_step,
        book,
        Booking(item="hotel", nights=2),
        after=[] if inp.parallel else [flight],
        compensate=cancel,
    )
    saga.step(
        "pay",
        pay,
        100,
        after=[flight, hotel],
        start_to_close_timeout=timedelta(seconds=inp.pay_timeout),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(hours=inp.retry_hours),
            backoff_coefficient=1,
            maximum_attempts=inp.pay_attempts,
        ),
    )
    return saga


@workflow.defn
class KitSaga:
    @workflow.run
    async def run(self, inp: KitInput) -> str:
        await kit_saga(inp).run()
        return "booked"


@workflow.defn(name="KitSaga")
class KitSagaRenamed:
    @workflow.run
    async def run(self, inp: KitInput) -> str:
        await kit_saga(inp.model_copy(update={"hotel_step": "reserve a room"})).run()
        return "booked"


@workflow.defn
class NotASaga:
    @workflow.run
    async def run(self) -> str:
        raise ApplicationError("a plain failure", non_retryable=True)
