"""Sagas with event steps (``Saga.event``), for the event tests and recorded histories.

``ShopSaga`` (the graph form): reserve the goods, wait for the payment (a ``Payment``
event, refunded if the saga fails after it, or while it waits), then ship what was
paid. ``approval``: the payment step waits first for an ``approval`` event step, so a
payment sent early is kept. ``pivot``: the reservation is the point of no return, and
the event steps come after it. ``ShopBlockSaga`` is the same in the imperative form.
Their activities are faked in the tests (``temporal_saga.testing.fake``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga, Step


class Payment(BaseModel):
    amount: int
    reference: str


class ShopInput(BaseModel):
    wait_seconds: float = 60
    approval: bool = False
    pivot: bool = False
    human_timeout_seconds: float | None = None


@activity.defn
async def reserve(item: str) -> str:
    raise NotImplementedError("faked in the tests")


@activity.defn
async def release(item: str) -> None:
    raise NotImplementedError("faked in the tests")


@activity.defn
async def refund(reference: str) -> None:
    raise NotImplementedError("faked in the tests")


@activity.defn
async def ship(amount: int) -> str:
    raise NotImplementedError("faked in the tests")


def _reference(payment: Step[Payment]) -> str:
    # The payment's reference once it came; the order's when the step is uncertain.
    return payment.result.reference if payment.status.value == "SUCCEEDED" else "order-1"


@workflow.defn
class ShopSaga:
    @workflow.run
    async def run(self, inp: ShopInput) -> dict[str, Any]:
        wait = timedelta(seconds=inp.wait_seconds)
        human = inp.human_timeout_seconds
        saga = Saga(
            "shop",
            start_to_close_timeout=timedelta(seconds=10),
            human_timeout=timedelta(seconds=human) if human is not None else None,
        )
        goods = saga.step(
            "reserve goods",
            reserve,
            "lamp",
            **({"pivot": True} if inp.pivot else {"compensate": release}),
        )
        first: list[Step[Any]] = [goods] if inp.pivot else []
        if inp.approval:
            first = [saga.event("approved", "approval", timeout=wait, after=first)]
        undo: dict[str, Any] = {} if inp.pivot else {"compensate": refund}
        if undo:
            undo["compensate_arg"] = lambda: _reference(payment)
        payment = saga.event(
            "payment confirmed", "payment", timeout=wait, result_type=Payment, after=first, **undo
        )
        shipped = saga.step("ship", ship, lambda: payment.result.amount, after=[payment, goods])
        await saga.run()
        return {"payment": payment.result.model_dump(), "shipped": shipped.result}


@workflow.defn
class ShopBlockSaga:
    @workflow.run
    async def run(self, inp: ShopInput) -> dict[str, Any]:
        wait = timedelta(seconds=inp.wait_seconds)
        async with Saga("shop", start_to_close_timeout=timedelta(seconds=10)) as saga:
            await saga.step("reserve goods", reserve, "lamp", compensate=release)
            if inp.approval:
                await saga.event("approved", "approval", timeout=wait)
            payment = await saga.event(
                "payment confirmed",
                "payment",
                timeout=wait,
                result_type=Payment,
                compensate=refund,
                compensate_arg="order-1",
            )
            shipped = await saga.step("ship", ship, payment.amount)
        return {"payment": payment.model_dump(), "shipped": shipped}
