"""The benchmark's workflows and activities: the same saga by hand and through the helper.

The activities do nothing but return (or fail), and never log, so the figures measure
the saga machinery and Temporal, not the work.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga

TIMEOUT = timedelta(seconds=30)
# The same policy for both: 3 attempts, as the helper's default.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class BenchStep(BaseModel):
    name: str
    sleep: float = 0.0
    fail: bool = False


class BenchSpec(BaseModel):
    steps: list[BenchStep]
    chain: bool = False  # each step after the previous one


@activity.defn
async def bench_step(step: BenchStep) -> str:
    if step.sleep:
        await asyncio.sleep(step.sleep)
    if step.fail:
        # BENIGN: expected, so the worker does not log it (logging is not what we measure).
        raise ApplicationError(
            f"{step.name} failed", non_retryable=True, category=ApplicationErrorCategory.BENIGN
        )
    return step.name


@activity.defn
async def bench_undo(step: BenchStep) -> None:
    return None


@workflow.defn
class HandWrittenSaga:
    """A saga the way the Temporal samples write one: run the steps, and on failure
    compensate the completed ones in reverse order, one by one."""

    @workflow.run
    async def run(self, spec: BenchSpec) -> list[str]:
        results: list[str] = []
        if spec.chain:
            for step in spec.steps:
                results.append(
                    await workflow.execute_activity(
                        bench_step, step, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
                    )
                )
            return results
        outcomes = await asyncio.gather(
            *(
                workflow.execute_activity(
                    bench_step, step, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
                )
                for step in spec.steps
            ),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if not failures:
            return [str(o) for o in outcomes]
        done = [
            s for s, o in zip(spec.steps, outcomes, strict=True) if not isinstance(o, BaseException)
        ]
        for step in reversed(done):
            await workflow.execute_activity(bench_undo, step, start_to_close_timeout=TIMEOUT)
        raise ApplicationError(f"saga failed: {failures[0]}", non_retryable=True)


@workflow.defn
class HelperSaga:
    """The same saga through temporal_saga."""

    @workflow.run
    async def run(self, spec: BenchSpec) -> list[str]:
        saga = Saga("bench", start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        previous = None
        for step in spec.steps:
            previous = saga.step(
                step.name,
                bench_step,
                step,
                compensate=bench_undo,
                after=[previous] if spec.chain and previous else [],
            )
        result = await saga.run()
        return [str(r) for r in result.results.values()]


@workflow.defn
class ImperativeHelperSaga:
    """The same saga through temporal_saga's imperative form (``async with``)."""

    @workflow.run
    async def run(self, spec: BenchSpec) -> list[str]:
        async with Saga("bench", start_to_close_timeout=TIMEOUT, retry_policy=RETRY) as saga:
            if spec.chain:
                return [
                    await saga.step(step.name, bench_step, step, compensate=bench_undo)
                    for step in spec.steps
                ]
            return list(
                await asyncio.gather(
                    *(
                        saga.step(step.name, bench_step, step, compensate=bench_undo)
                        for step in spec.steps
                    )
                )
            )


WORKFLOWS = [HandWrittenSaga, HelperSaga, ImperativeHelperSaga]
ACTIVITIES = [bench_step, bench_undo]


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
