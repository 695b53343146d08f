"""Beyond plain compensation: pivot and retriable steps, nested sagas (DESIGN section 3)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from temporal_saga import Saga, SagaFailed, SagaStatus, StepStatus
from temporal_saga.client import load_state, render_trace, state_from_history

from .conftest import WorkerFactory
from .helpers import ACTIVITIES, WORKFLOWS, did, fail_saga, run_saga, spec
from .scripted import JOURNAL, NestedSaga, NestedSpec, ScriptedStep, do_step, undo_step

FAST_RETRY = {"transient_failures": 4}  # more than a normal step's 3 attempts


async def test_failure_before_the_pivot_is_undone_backwards(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="reserve"),
        ScriptedStep(
            name="charge card",
            after=["reserve"],
            pivot=True,
            compensate=False,
            fail="card declined",
        ),
        ScriptedStep(name="ship", after=["charge card"], compensate=False),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"reserve"}
    assert failure.state.status is SagaStatus.COMPENSATED
    assert not failure.state.past_pivot and failure.needs_human == []


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_after_the_pivot_steps_are_retried_until_they_succeed(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="reserve"),
        ScriptedStep(name="charge card", after=["reserve"], pivot=True, compensate=False),
        ScriptedStep(name="ship", after=["charge card"], compensate=False, **FAST_RETRY),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        result = await run_saga(client, task_queue, s)
    assert [e.attempt for e in JOURNAL[s.run] if e.step == "ship"] == [1, 2, 3, 4, 5]
    assert result.state.past_pivot and result.state.step("ship").after_pivot
    assert "✔️ charge card (pivot: no way back)" in render_trace(result.state)


async def test_a_step_failing_for_good_after_the_pivot_needs_a_human(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="reserve"),
        ScriptedStep(name="charge card", after=["reserve"], pivot=True, compensate=False),
        ScriptedStep(name="ship", after=["charge card"], compensate=False, fail="warehouse gone"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == set()  # no way back
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["ship"]
    assert render_trace(failure.state).endswith(
        "❗️ step failed after the pivot: no way back\n\n"
        "❌ end saga (warehouse gone; manual intervention needed for: ship)"
    )


def test_pivot_definition_errors() -> None:
    saga = Saga("s")
    with pytest.raises(ValueError, match="point of no return; it has no compensation"):
        saga.step("p", do_step, pivot=True, compensate=undo_step)
    saga.step("p", do_step, pivot=True)
    with pytest.raises(ValueError, match="already has a pivot, 'p'"):
        saga.step("q", do_step, pivot=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"after": ["p"], "compensate": undo_step}, "cannot declare a compensation"),
        ({}, "neither before nor after the pivot 'p'"),
    ],
)
async def test_steps_must_sit_before_or_after_the_pivot(extra: dict, message: str) -> None:
    saga = Saga("s")
    saga.step("p", do_step, pivot=True)
    saga.step("x", do_step, **extra)
    with pytest.raises(ValueError, match=message):
        await saga.run()


def nested(child_steps: list[ScriptedStep], *, sibling_fails: bool = False) -> NestedSpec:
    child = spec(*child_steps)
    return NestedSpec(run=str(uuid.uuid4()), child=child, sibling_fails=sibling_fails)


async def test_a_failing_child_saga_fails_its_step_with_its_own_reason(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    n = nested([ScriptedStep(name="room deposit"), ScriptedStep(name="room", fail="no rooms")])
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                NestedSaga.run, n, id=f"nested-{n.run}", task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "child saga"
    assert failure.reason == "room: no rooms"  # the child's SagaFailed message
    assert did(n.child, "undo") == {"room deposit"}  # the child undid itself
    assert did(n, "undo") == {"sibling"}  # the parent undid the rest
    assert failure.state.step("child saga").status is StepStatus.FAILED


async def test_compensating_a_child_saga_runs_its_compensation(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    n = nested([ScriptedStep(name="room")], sibling_fails=True)
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                NestedSaga.run, n, id=f"nested-{n.run}", task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "sibling"
    assert did(n.child, "do") == {"room"}
    assert did(n, "undo") == {"child saga"}
    assert failure.state.step("child saga").status is StepStatus.COMPENSATED


@pytest.mark.parametrize("sibling_fails", [False, True], ids=["succeeded", "compensated"])
async def test_a_nested_saga_is_rebuilt_from_history_alone(
    client: Client, task_queue: str, worker: WorkerFactory, sibling_fails: bool
) -> None:
    n = nested([ScriptedStep(name="room")], sibling_fails=sibling_fails)
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            NestedSaga.run, n, id=f"nested-{n.run}", task_queue=task_queue
        )
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        live, source = await load_state(handle)
    assert source == "query"
    events = list((await handle.fetch_history()).events)
    # As a reader without the key of the failure's details: they cannot be decoded, so
    # the state comes from the events alone.
    failed = events[-1].workflow_execution_failed_event_attributes.failure
    for payload in failed.application_failure_info.details.payloads:
        payload.metadata["encoding"] = b"binary/encrypted"
    rebuilt = await state_from_history(events, client.data_converter, workflow_id=handle.id)
    assert render_trace(rebuilt) == render_trace(live)
    assert [s.name for s in rebuilt.steps] == ["child saga", "sibling"]
