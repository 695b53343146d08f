"""The undo always happens: whatever arrives when (DESIGN sections 1-3), on a real server.

Cancels at every phase of a saga (also during compensation, also twice), task queues
of compensations, per-run identity, nested sagas that were terminated or could not
undo themselves, misuse, and the state rebuilt from history being true.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from temporal_saga import Saga, SagaDefinitionError, SagaFailed, SagaState, SagaStatus, StepStatus
from temporal_saga._protocol import SAGA_STATE_QUERY, SAGA_STATUS_ATTRIBUTE
from temporal_saga.client import render_trace

from .conftest import WorkerFactory
from .helpers import (
    ACTIVITIES,
    WORKFLOWS,
    did,
    ends_cancelled,
    fail_saga,
    rebuild,
    spec,
    start,
    wait_for,
)
from .scripted import (
    JOURNAL,
    MisusedSaga,
    NestedSaga,
    NestedSpec,
    RetryLoopSaga,
    ScriptedSpec,
    ScriptedStep,
    do_step,
    undo_step,
)


def compensating(state: SagaState) -> bool:
    return any(s.status is StepStatus.COMPENSATING for s in state.steps)


async def saga_status_attribute(handle: WorkflowHandle[Any, Any]) -> str | None:
    return (await handle.describe()).typed_search_attributes.get(SAGA_STATUS_ATTRIBUTE)


def undo_attempts_all_ok(s: ScriptedSpec) -> bool:
    """No compensation attempt was cut short (a cancel reaching it ends it not ok)."""
    return all(e.ok for e in JOURNAL[s.run] if e.kind == "undo")


# --- cancellation at every phase ------------------------------------------------


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("cancels", [1, 2], ids=["cancelled-once", "cancelled-twice"])
async def test_a_cancel_while_compensating_lets_every_compensation_finish(
    client: Client, task_queue: str, worker: WorkerFactory, parallel: bool, cancels: int
) -> None:
    s = spec(
        ScriptedStep(name="a", undo_sleep=1.5),  # slow compensations, heartbeating
        ScriptedStep(name="c", undo_sleep=1.5),
        ScriptedStep(name="b", sleep=0.3, fail="no available hotel rooms"),
        parallel_compensation=parallel,
        search_attributes=True,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, compensating)
        for cancel in range(1, cancels + 1):
            await handle.cancel()
            await workflow_task_after_cancel(handle, cancel)  # the saga has seen it
        await ends_cancelled(handle)
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert did(s, "undo") == {"a", "c"} and undo_attempts_all_ok(s)
    assert state.status is SagaStatus.COMPENSATED
    assert render_trace(state).endswith("❌ end saga (no available hotel rooms)")
    assert await saga_status_attribute(handle) == "COMPENSATED"


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
async def test_a_cancel_mid_way_undoes_the_running_steps_then_ends_cancelled(
    client: Client, task_queue: str, worker: WorkerFactory, parallel: bool
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="b", sleep=5),
        ScriptedStep(name="c", after=["a"], sleep=5),
        ScriptedStep(name="later", after=["b"]),
        parallel_compensation=parallel,
        search_attributes=True,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, lambda st: st.step("c").status is StepStatus.RUNNING)
        await handle.cancel()
        await ends_cancelled(handle)
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert did(s, "undo") == {"a", "b", "c"} and "later" not in did(s, "do")
    assert state.status is SagaStatus.COMPENSATED and state.reason == "saga cancelled"
    assert state.step("later").status is StepStatus.SKIPPED
    assert await saga_status_attribute(handle) == "COMPENSATED"


async def test_a_cancel_before_any_step_runs_nothing_and_ends_cancelled(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b"), search_attributes=True)
    handle = await start(client, task_queue, s)
    await handle.cancel()  # before any worker has seen the workflow
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await ends_cancelled(handle)
    assert did(s, "do") == set()
    assert await saga_status_attribute(handle) == "COMPENSATED"


async def workflow_task_after_cancel(handle: WorkflowHandle[Any, Any], cancels: int) -> None:
    """Wait until the workflow has run a workflow task after the cancel requests so far
    (or has closed): the saga has seen them. The server records a workflow's first
    cancel request only; a second one changes nothing in its history."""
    for _ in range(400):
        kinds = [e.event_type async for e in handle.fetch_history_events()]
        requested = [i for i, k in enumerate(kinds) if k == CANCEL_REQUESTED]
        if requested and (TASK_COMPLETED in kinds[requested[-1] :] or CLOSED_CANCELLED in kinds):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the saga never saw cancel {cancels}")


CANCEL_REQUESTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
TASK_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
CLOSED_CANCELLED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED


async def test_a_cancel_after_the_saga_closed_changes_nothing(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await handle.result()
        with contextlib.suppress(RPCError):  # the server may refuse or ignore it
            await handle.cancel()
        # A closed workflow never runs again: its state and status are final.
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert state.status is SagaStatus.SUCCEEDED and did(s, "undo") == set()
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED


# --- what the compensation gets and where it runs ----------------------------------


async def test_a_compensation_runs_on_its_steps_task_queue(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """Steps served by another service's worker are undone by that worker."""
    other = f"other-{uuid.uuid4()}"
    s = spec(
        ScriptedStep(name="a", task_queue=other),
        ScriptedStep(name="b", task_queue=other, sleep=0.3, fail="refused"),
    )
    async with (
        worker(workflows=WORKFLOWS),  # this queue has no activities at all
        Worker(client, task_queue=other, activities=ACTIVITIES),
    ):
        failure = await asyncio.wait_for(fail_saga(client, task_queue, s), 30)
    assert failure.state.status is SagaStatus.COMPENSATED and did(s, "undo") == {"a"}


async def test_by_default_a_compensation_gets_its_steps_argument_even_after_a_timeout(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a", undo_arg="same"),
        ScriptedStep(name="slow", sleep=2, start_to_close=1, max_attempts=1, undo_arg="same"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    # undo_step takes a Script: it ran, so it got the step's Script, not its result (a str).
    assert did(s, "undo") == {"a", "slow"}
    assert failure.state.status is SagaStatus.COMPENSATED


async def test_a_compensation_that_needs_the_result_of_a_timed_out_step_says_so(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="slow", sleep=2, start_to_close=1, max_attempts=1, undo_arg="result"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"a"}
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["slow"]
    error = failure.state.step("slow").compensation.error  # type: ignore[union-attr]
    assert error is not None
    assert "'slow' has no result" in error and "uncertain" in error
    assert "idempotency_key()" in error


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
async def test_a_compensation_failing_for_good_first_does_not_stop_the_later_ones(
    client: Client, task_queue: str, worker: WorkerFactory, parallel: bool
) -> None:
    # b's compensation runs first in both modes: b depends on a, and b finished last.
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="b", after=["a"], sleep=0.3, undo_fail="cannot cancel"),
        ScriptedStep(name="x", sleep=1.0, fail="boom"),
        parallel_compensation=parallel,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.state.step("b").compensation.order == 0  # type: ignore[union-attr]
    assert did(s, "undo") == {"a"}
    assert failure.state.step("a").status is StepStatus.COMPENSATED
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["b"]


# --- identity ---------------------------------------------------------------------


def keys(s: ScriptedSpec, kind: str, step: str) -> set[str]:
    return {e.key for e in JOURNAL[s.run] if e.kind == kind and e.step == step}


async def activity_ids(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_each_run_of_a_saga_in_a_workflow_gets_its_own_identity(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    first = ScriptedSpec(
        run=run,
        name="book",
        steps=[ScriptedStep(name="a"), ScriptedStep(name="b", sleep=0.3, fail="full")],
    )
    second = ScriptedSpec(run=run, name="book", steps=[ScriptedStep(name="a")])
    async with worker(workflows=[RetryLoopSaga], activities=ACTIVITIES):
        outcomes = await client.execute_workflow(
            RetryLoopSaga.run, [first, second], id=f"loop-{run}", task_queue=task_queue
        )
    assert outcomes == ["COMPENSATED", "SUCCEEDED"]
    booked = [e.key for e in JOURNAL[run] if e.kind == "do" and e.step == "a"]
    [undone] = [e.key for e in JOURNAL[run] if e.kind == "undo"]
    assert len(set(booked)) == 2 and undone == booked[0]
    assert await activity_ids(client, f"loop-{run}") == [
        "book/a",
        "book/b",
        "book/a/compensate",
        "book#2/a",
    ]


async def test_no_step_name_can_take_another_steps_or_compensations_identity(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="x"),
        ScriptedStep(name="x/compensate"),
        ScriptedStep(name="y#2"),
        ScriptedStep(name="z", sleep=0.5, fail="boom"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"x", "x/compensate", "y#2"}
    assert keys(s, "do", "x") == keys(s, "undo", "x")
    assert keys(s, "do", "x/compensate") == keys(s, "undo", "x/compensate")
    assert keys(s, "do", "x") != keys(s, "do", "x/compensate")
    ids = await activity_ids(client, f"saga-{s.run}")
    assert len(ids) == len(set(ids)) == 7
    assert "scripted/x%2Fcompensate" in ids and "scripted/y%232" in ids
    rebuilt = await rebuild(client, f"saga-{s.run}")
    assert rebuilt == failure.state.model_copy(update={"steps": rebuilt.steps})
    assert [st.name for st in rebuilt.steps] == ["x", "x/compensate", "y#2", "z"]


# --- nested sagas -------------------------------------------------------------------


def nested(sibling_fails: bool, *child_steps: ScriptedStep) -> NestedSpec:
    run = str(uuid.uuid4())
    return NestedSpec(
        run=run,
        child=ScriptedSpec(run=run, steps=list(child_steps)),
        sibling_fails=sibling_fails,
    )


async def test_a_terminated_child_saga_is_uncertain_and_compensated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    n = nested(False, ScriptedStep(name="inner", sleep=30))
    parent_id = f"nested-{n.run}"
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(NestedSaga.run, n, id=parent_id, task_queue=task_queue)
        child = client.get_workflow_handle(f"{parent_id}/parent/child saga")
        await wait_for(child, lambda st: st.step("inner").status is StepStatus.RUNNING)
        await child.terminate("an operator pulled the plug")
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None
    step = failure.state.step("child saga")
    assert step.uncertain and step.error == "terminated"
    assert did(n.child, "undo") == {"child saga", "sibling"}  # the parent undid the child
    assert failure.state.status is SagaStatus.COMPENSATED


async def test_a_child_that_could_not_undo_itself_makes_the_parent_need_a_human(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    n = nested(
        False,
        ScriptedStep(name="inner", undo_fail="cannot cancel"),
        ScriptedStep(name="breaks", sleep=0.3, fail="broken"),
    )
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                NestedSaga.run, n, id=f"nested-{n.run}", task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["child saga"]
    assert failure.state.step("child saga").nested_needs_human == ["inner"]
    assert "manual intervention needed for: child saga" in str(failure)
    assert "sibling" in did(n.child, "undo") and "child saga" not in did(n.child, "undo")
    trace = render_trace(failure.state)
    assert "manual intervention needed for: inner" in trace  # the child's own reason


# --- misuse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mistake", "kind", "message", "ran"),
    [
        (
            "mistyped option",
            "SagaTypeError",
            "saga 'misused': activity option 'start_to_close_timeout' must be a timedelta, not int",
            set(),
        ),
        ("result before run", "NoResult", "step 'a' has no result (it is PENDING)", set()),
        (
            "result of a skipped step",
            "NoResult",
            "step 'skipped' has no result (it is SKIPPED)",
            {("do", "a")},
        ),
        (
            "await in graph form",
            "SagaDefinitionError",
            "step 'a': await a step only inside `async with Saga(...)`",
            set(),
        ),
        (
            "positional compensation",
            "SagaTypeError",
            "saga 'misused', step 'a': step() takes the name, the activity",
            set(),
        ),
    ],
)
async def test_misuse_fails_the_workflow_at_once_naming_the_step(
    client: Client,
    task_queue: str,
    worker: WorkerFactory,
    mistake: str,
    kind: str,
    message: str,
    ran: set[tuple[str, str]],
) -> None:
    """Misuse in workflow code fails the workflow with one line, rather than a plain
    Python error that makes its workflow task retry forever."""
    run = str(uuid.uuid4())
    async with worker(workflows=[MisusedSaga], activities=ACTIVITIES):
        began = time.monotonic()
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                MisusedSaga.run,
                args=[run, mistake],
                id=f"misused-{run}",
                task_queue=task_queue,
                run_timeout=timedelta(seconds=10),  # a task retried forever times out
            )
        assert time.monotonic() - began < 10  # failed, not retried forever
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == kind and cause.non_retryable
    assert cause.message.startswith(message) and "\n" not in cause.message
    assert {(e.kind, e.step) for e in JOURNAL[run]} == ran


async def test_an_error_the_block_raises_keeps_its_type_message_and_traceback(
    client: Client, task_queue: str, worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[MisusedSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                MisusedSaga.run,
                args=[run, "block error"],
                id=f"misused-{run}",
                task_queue=task_queue,
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.state.status is SagaStatus.COMPENSATED
    assert failure.reason == "the saga's code raised KeyError"  # public: the type alone
    # The message reaches the client in the cause's details, which the codec encrypts.
    cause = caught.value.cause.cause  # type: ignore[union-attr]
    assert isinstance(cause, ApplicationError) and cause.type == "KeyError"
    assert cause.message == "KeyError" and cause.details == (f"KeyError: 'no seat for {run}'",)
    # And the traceback reaches the worker's log.
    [logged] = [r for r in caplog.records if "its code raised KeyError" in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is KeyError
    assert {(e.kind, e.step) for e in JOURNAL[run]} == {("do", "a"), ("undo", "a")}


async def test_a_sandbox_error_in_an_argument_is_a_bug_to_fix_not_a_reason_to_undo(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[MisusedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            MisusedSaga.run, args=[run, "sandbox error"], id=f"misused-{run}", task_queue=task_queue
        )
        deadline = time.monotonic() + 20
        while EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in [
            e.event_type async for e in handle.fetch_history_events()
        ]:
            assert time.monotonic() < deadline, "the workflow task never failed"
            await asyncio.sleep(0.2)
        # The workflow waits for a fixed worker; nothing was undone on account of a bug.
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        await handle.terminate("test over")
    assert {(e.kind, e.step) for e in JOURNAL[run]} == {("do", "a")}


def test_a_saga_too_large_for_any_history_is_refused_before_it_runs() -> None:
    saga = Saga("huge")
    for i in range(9000):
        saga.step(f"s{i}", do_step, compensate=undo_step)
    with pytest.raises(SagaDefinitionError, match="split it into nested sagas"):
        saga._definition.resolve()


# --- the state rebuilt from history --------------------------------------------------


@pytest.mark.time_skipping  # retry backoffs are timers
@pytest.mark.parametrize("key", [True, False], ids=["with-key", "keyless"])
async def test_a_failed_saga_rebuilt_from_history_has_attempts_and_failed_compensations(
    client: Client, task_queue: str, worker: WorkerFactory, key: bool
) -> None:
    s = spec(
        ScriptedStep(name="a", transient_failures=1, undo_fail="cannot cancel"),
        ScriptedStep(name="b", undo_transient_failures=2),
        ScriptedStep(name="c", sleep=1.0, fail="boom"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    rebuilt = await rebuild(client, f"saga-{s.run}", key=key)
    assert rebuilt.status is SagaStatus.COMPENSATION_FAILED
    assert rebuilt.needs_human == failure.needs_human == ["a"]
    assert rebuilt.step("a").attempts == 2
    assert rebuilt.step("b").compensation.attempts == 3  # type: ignore[union-attr]
    assert render_trace(rebuilt) == render_trace(failure.state)


async def test_a_terminated_saga_is_shown_interrupted_with_what_it_left_in_effect(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b", sleep=30))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, lambda st: st.step("b").status is StepStatus.RUNNING)
        await handle.terminate("stuck")
    rebuilt = await rebuild(client, handle.id)
    assert rebuilt.status is SagaStatus.INTERRUPTED
    assert rebuilt.reason == "workflow terminated"
    assert rebuilt.needs_human == ["a", "b"]
    assert render_trace(rebuilt).endswith(
        "❌ end saga (workflow terminated; manual intervention needed for: a, b)"
    )


async def test_a_saga_whose_failure_was_caught_is_not_shown_succeeded(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    failing = ScriptedSpec(
        run=run, steps=[ScriptedStep(name="a"), ScriptedStep(name="b", sleep=0.3, fail="full")]
    )
    async with worker(workflows=[RetryLoopSaga], activities=ACTIVITIES):
        await client.execute_workflow(
            RetryLoopSaga.run, [failing], id=f"loop-{run}", task_queue=task_queue
        )
    rebuilt = await rebuild(client, f"loop-{run}")
    assert rebuilt.status is SagaStatus.COMPENSATED
    assert rebuilt.failed_step == "b" and rebuilt.reason == "full"


@pytest.mark.parametrize("key", [True, False], ids=["with-key", "keyless"])
async def test_a_failure_after_the_pivot_names_every_forward_step_left_undone(
    client: Client, task_queue: str, worker: WorkerFactory, key: bool
) -> None:
    s = spec(
        ScriptedStep(name="a", compensate=False, pivot=True),
        ScriptedStep(name="b", after=["a"], compensate=False, fail="gone"),
        ScriptedStep(name="c", after=["b"], compensate=False),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["b", "c"]
    rebuilt = await rebuild(client, f"saga-{s.run}", key=key)
    assert rebuilt.status is SagaStatus.COMPENSATION_FAILED
    assert rebuilt.needs_human == ["b", "c"]
    assert render_trace(rebuilt) == render_trace(failure.state)
