"""A user's own service, outside this repository: one saga, its activities.

Used by ``tests/test_packaging.py``, which copies this file next to ``run_shop.py``
into an empty folder and runs it with the installed wheel only.
"""

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga

UNDONE: list[str] = []


@activity.defn
async def reserve(item: str) -> str:
    return f"reserved {item}"


@activity.defn
async def release(item: str) -> None:
    UNDONE.append(item)


@activity.defn
async def charge(amount: int) -> str:
    raise ApplicationError("card declined", non_retryable=True)


@workflow.defn
class Order:
    @workflow.run
    async def run(self, item: str) -> str:
        saga = Saga("order", start_to_close_timeout=timedelta(seconds=10))
        saga.step("reserve stock", reserve, item, compensate=release)
        saga.step("charge card", charge, 42)
        await saga.run()
        return "ordered"
