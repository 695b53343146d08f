"""The benchmark's workflows and activities: the same saga by hand and through the helper.

Four contenders run the same steps with the same activities, timeouts and retries:

- ``HandWrittenSaga``: the samples' way, steps in parallel (or chained), on failure
  the completed ones compensated in reverse order, one by one;
- ``HandWrittenWithSummaries``: the same, giving the Web UI the step names the helper
  gives it (each activity's summary: the step's name, ``undo <name>``);
- ``HelperSaga``: temporal_saga's graph form (``saga.step`` ... ``await saga.run()``);
- ``ImperativeHelperSaga``: temporal_saga's imperative form (``async with Saga(...)``).

A saga's input is a plain JSON object (:func:`bench_spec`). With ``models`` its steps'
activities take pydantic models, otherwise plain JSON objects, so the engine's own cost
is measured both diluted by pydantic and not. The activities do nothing but return (or
fail), and never log: the figures measure the saga machinery and Temporal, not the work.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

with workflow.unsafe.imports_passed_through():
    import nexusrpc
    import nexusrpc.handler

    from temporal_saga import Saga
    from temporal_saga.nexus import NexusOperation

TIMEOUT = timedelta(seconds=30)
# The same policy for all: 3 attempts, as the helper's default.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class BenchStep(BaseModel):
    name: str
    sleep: float = 0.0
    fail: bool = False


def bench_spec(
    names: list[str],
    *,
    fail: str | None = None,
    sleep: float = 0.0,
    chain: bool = False,
    models: bool = False,
) -> dict[str, Any]:
    """A saga's input: the steps (``fail`` names the one that fails), each after the
    previous one with ``chain``, their activities on pydantic models with ``models``."""
    return {
        "steps": [{"name": n, "sleep": sleep, "fail": n == fail} for n in names],
        "chain": chain,
        "models": models,
    }


async def _act(step: dict[str, Any]) -> str:
    if step["sleep"]:
        await asyncio.sleep(step["sleep"])
    if step["fail"]:
        # BENIGN: expected, so the worker does not log it (logging is not what we measure).
        raise ApplicationError(
            f"{step['name']} failed", non_retryable=True, category=ApplicationErrorCategory.BENIGN
        )
    return str(step["name"])


@activity.defn
async def bench_step(step: BenchStep) -> str:
    return await _act(step.model_dump())


@activity.defn
async def bench_undo(step: BenchStep) -> None:
    return None


@activity.defn
async def bench_step_json(step: dict[str, Any]) -> str:
    return await _act(step)


@activity.defn
async def bench_undo_json(step: dict[str, Any]) -> None:
    return None


def planned(spec: dict[str, Any]) -> tuple[Any, Any, list[tuple[str, Any]]]:
    """The step and undo activities, and each step's name and argument."""
    if spec["models"]:
        return bench_step, bench_undo, [(s["name"], BenchStep(**s)) for s in spec["steps"]]
    return bench_step_json, bench_undo_json, [(s["name"], s) for s in spec["steps"]]


async def hand_written(spec: dict[str, Any], *, summaries: bool) -> list[str]:
    """A saga the way the Temporal samples write one: run the steps, and on failure
    compensate the completed ones in reverse order, one by one."""
    do, undo, steps = planned(spec)

    def execute(fn: Any, name: str, arg: Any) -> Any:
        return workflow.execute_activity(
            fn,
            arg,
            start_to_close_timeout=TIMEOUT,
            retry_policy=RETRY,
            summary=name if summaries else None,
        )

    if spec["chain"]:
        return [await execute(do, name, arg) for name, arg in steps]
    outcomes = await asyncio.gather(
        *(execute(do, name, arg) for name, arg in steps), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if not failures:
        return [str(o) for o in outcomes]
    done = [s for s, o in zip(steps, outcomes, strict=True) if not isinstance(o, BaseException)]
    for name, arg in reversed(done):
        await execute(undo, f"undo {name}", arg)
    raise ApplicationError(f"saga failed: {failures[0]}", non_retryable=True)


@workflow.defn
class HandWrittenSaga:
    """The hand-written saga, activities without summaries (the Web UI shows no step names)."""

    @workflow.run
    async def run(self, spec: dict[str, Any]) -> list[str]:
        return await hand_written(spec, summaries=False)


@workflow.defn
class HandWrittenWithSummaries:
    """The hand-written saga, giving the Web UI the helper's step names."""

    @workflow.run
    async def run(self, spec: dict[str, Any]) -> list[str]:
        return await hand_written(spec, summaries=True)


@workflow.defn
class HelperSaga:
    """The same saga through temporal_saga."""

    @workflow.run
    async def run(self, spec: dict[str, Any]) -> list[str]:
        do, undo, steps = planned(spec)
        saga = Saga("bench", start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        previous = None
        for name, arg in steps:
            previous = saga.step(
                name,
                do,
                arg,
                compensate=undo,
                after=[previous] if spec["chain"] and previous else [],
            )
        result = await saga.run()
        return [str(r) for r in result.results.values()]


@workflow.defn
class ImperativeHelperSaga:
    """The same saga through temporal_saga's imperative form (``async with``)."""

    @workflow.run
    async def run(self, spec: dict[str, Any]) -> list[str]:
        do, undo, steps = planned(spec)
        async with Saga("bench", start_to_close_timeout=TIMEOUT, retry_policy=RETRY) as saga:
            if spec["chain"]:
                return [await saga.step(name, do, arg, compensate=undo) for name, arg in steps]
            return list(
                await asyncio.gather(
                    *(saga.step(name, do, arg, compensate=undo) for name, arg in steps)
                )
            )


class LargeSpec(BaseModel):
    width: int  # independent steps, each with a compensation
    last_fails: bool = False  # then one more step, after all of them, fails
    max_parallelism: int | None = None


@workflow.defn
class LargeHelperSaga:
    """A fan-out of ``width`` steps through temporal_saga, optionally failing at the end."""

    @workflow.run
    async def run(self, spec: LargeSpec) -> str:
        saga = Saga(
            "large",
            start_to_close_timeout=TIMEOUT,
            retry_policy=RETRY,
            max_parallelism=spec.max_parallelism,
        )
        fan = [
            saga.step(f"s{i:05d}", bench_step, BenchStep(name=f"s{i:05d}"), compensate=bench_undo)
            for i in range(spec.width)
        ]
        if spec.last_fails:
            saga.step("last", bench_step, BenchStep(name="last", fail=True), after=fan)
        return (await saga.run()).state.status.value


# --- Waiting for an event: by hand, and as an event step (bench/events.py) -----------

EVENT_TIMEOUT = timedelta(minutes=5)


@workflow.defn
class HandWrittenWait:
    """Waits for a ``payment`` by hand: an Update handler keeps the payload, the run
    waits for it with ``workflow.wait_condition`` and the same timeout."""

    def __init__(self) -> None:
        self.payment: dict[str, Any] | None = None

    @workflow.update
    def pay(self, payment: dict[str, Any]) -> str:
        self.payment = payment
        return "taken"

    @workflow.run
    async def run(self) -> dict[str, Any]:
        await workflow.wait_condition(lambda: self.payment is not None, timeout=EVENT_TIMEOUT)
        assert self.payment is not None
        return self.payment


@workflow.defn
class EventStepSaga:
    """The same wait as a saga's event step (``saga_event``)."""

    @workflow.run
    async def run(self) -> dict[str, Any]:
        saga = Saga("pay")
        payment = saga.event("payment confirmed", "payment", timeout=EVENT_TIMEOUT)
        await saga.run()
        return payment.result  # type: ignore[no-any-return]


# --- A Nexus step against the same step as an activity (bench/nexus.py) -------------

NEXUS_ENDPOINT = "bench-team"


@nexusrpc.service(name="Quote")
class QuoteService:
    """Another team's service: one synchronous operation that does nothing but answer."""

    quote: nexusrpc.Operation[str, str]


@nexusrpc.handler.service_handler(service=QuoteService)
class QuoteHandler:
    @nexusrpc.handler.sync_operation
    async def quote(self, ctx: nexusrpc.handler.StartOperationContext, item: str) -> str:
        return f"quote for {item}"


@activity.defn
async def quote(item: str) -> str:
    """The same work as an activity of the saga's own worker."""
    return f"quote for {item}"


@activity.defn
async def unquote(item: str) -> None:
    return None


@workflow.defn
class QuoteSaga:
    """A one-step saga: the quote as an activity, or as another team's Nexus operation."""

    @workflow.run
    async def run(self, nexus: bool) -> str:
        saga = Saga("quote", start_to_close_timeout=TIMEOUT)
        callee: Any = NexusOperation(NEXUS_ENDPOINT, QuoteService, QuoteService.quote)
        step = saga.step("quote", callee if nexus else quote, "teapot", compensate=unquote)
        await saga.run()
        return str(step.result)


@workflow.defn
class HandWrittenQuote:
    """The same Nexus call, hand-written (the Web UI's name given as its summary)."""

    @workflow.run
    async def run(self) -> str:
        client = workflow.create_nexus_client(endpoint=NEXUS_ENDPOINT, service=QuoteService)
        return await client.execute_operation(QuoteService.quote, "teapot", summary="quote")


WORKFLOWS: list[type] = [
    HandWrittenSaga,
    HandWrittenWithSummaries,
    HelperSaga,
    ImperativeHelperSaga,
    LargeHelperSaga,
    HandWrittenWait,
    EventStepSaga,
    QuoteSaga,
    HandWrittenQuote,
]
ACTIVITIES = [bench_step, bench_undo, bench_step_json, bench_undo_json, quote, unquote]
