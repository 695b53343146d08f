"""Sagas with control flow: conditional steps (``when=``), in every phase of a saga."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from temporal_saga import Saga, SagaDefinitionError, SagaStatus, SagaTypeError, StepStatus
from temporal_saga.client import render_trace, state_from_history

from .conftest import WorkerFactory
from .helpers import (
    ACTIVITIES,
    WORKFLOWS,
    did,
    ends_cancelled,
    fail_saga,
    run_saga,
    spec,
    start,
    wait_for,
)
from .scripted import ScriptedStep, do_step, undo_step


def branching(*more: ScriptedStep, **options: object):  # type: ignore[no-untyped-def]
    """a; then b (a's result is "do a": runs) and c (is "nope": skipped); d after c."""
    return spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="b", after=["a"], when=("a", "do a")),
        ScriptedStep(name="c", after=["a"], when=("a", "nope")),
        ScriptedStep(name="d", after=["c"]),
        *more,
        **options,
    )


async def test_a_false_condition_skips_the_step_and_its_dependents_go_on(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = branching()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        result = await run_saga(client, task_queue, s)
    assert result.state.status is SagaStatus.SUCCEEDED
    assert did(s, "do") == {"a", "b", "d"}
    c = result.state.step("c")
    assert c.status is StepStatus.SKIPPED and c.note == "condition not met"
    assert c.started_at is not None and c.compensation is None
    assert result.results["c"] is None
    assert "⏭️ c (condition not met)\n✔️ d" in render_trace(result.state)


async def test_a_failure_after_a_skipped_step_undoes_what_ran_not_what_was_skipped(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = branching(ScriptedStep(name="e", after=["d"], fail="boom"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert did(s, "undo") == {"a", "b", "d"}
    assert failure.state.step("c").status is StepStatus.SKIPPED
    trace = render_trace(failure.state)
    assert "⏭️ c (condition not met)" in trace and "undo c" not in trace


async def test_a_condition_that_raises_fails_its_step_and_the_saga_is_undone(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b", after=["a"], when_raises=True))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.failed_step == "b"
    assert failure.reason == "could not evaluate its condition: ZeroDivisionError"
    assert did(s, "do") == {"a"} and did(s, "undo") == {"a"}


async def test_reading_a_skipped_steps_result_fails_the_reader_and_says_why(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = branching(ScriptedStep(name="e", after=["c"], arg_reads="c"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.failed_step == "e"
    assert failure.reason == "could not build its argument: step 'c' has no result (it is SKIPPED)"
    assert did(s, "undo") == {"a", "b", "d"}  # d ran beside e, and was waited for


async def test_a_cancel_before_a_conditional_step_leaves_it_skipped_unevaluated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a", sleep=30, heartbeat_timeout=2),
        ScriptedStep(name="b", after=["a"], when_raises=True),  # never evaluated
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, lambda state: state.step("a").status is StepStatus.RUNNING)
        await handle.cancel()
        await ends_cancelled(handle)
        history = await handle.fetch_history()
    state = await state_from_history(history.events, client.data_converter)
    assert [step.name for step in state.steps] == ["a"]  # b never ran: history has no trace
    assert did(s, "undo") == {"a"}


async def test_a_condition_while_compensating_is_never_evaluated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """A step whose dependencies were still running when another step failed does not
    start, so its condition is not called; the saga undoes what ran."""
    s = spec(
        ScriptedStep(name="a", sleep=1),
        ScriptedStep(name="b", fail="boom"),
        ScriptedStep(name="c", after=["a"], when_raises=True),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.failed_step == "b" and failure.reason == "boom"
    assert failure.state.step("c").status is StepStatus.SKIPPED
    assert failure.state.step("c").note is None  # not run, rather than condition false
    assert "⏭️ c (skipped)" in render_trace(failure.state)


def test_a_condition_must_be_callable_and_the_pivot_unconditional() -> None:
    saga = Saga("s")
    with pytest.raises(SagaTypeError, match="when= takes a zero-argument callable"):
        saga.step("a", do_step, when=True)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="the pivot cannot be conditional"):
        saga.step("b", do_step, pivot=True, when=lambda: True)
    saga.step("c", do_step, compensate=undo_step, when=lambda: True)  # fine
