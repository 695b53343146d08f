"""The saga engine against a real Temporal dev server (DESIGN sections 1 and 2)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
import time
from collections import Counter
from datetime import timedelta
from graphlib import TopologicalSorter

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from temporal_saga import Saga, SagaFailed, SagaState, SagaStatus, StepState, StepStatus
from temporal_saga._protocol import SAGA_STATE_QUERY
from temporal_saga._scheduler import _in_order
from temporal_saga._state import CompensationState, bounded
from temporal_saga._trace import CONDITION_NOT_MET, NOT_IN_THIS_VERSION
from temporal_saga.client import render_trace

from .conftest import WorkerFactory
from .helpers import ACTIVITIES, WORKFLOWS, did, entry, fail_saga, run_saga, spec
from .scripted import (
    JOURNAL,
    HandWrittenParallel,
    ScriptedSaga,
    ScriptedStep,
    do_step,
    undo_step,
)


async def test_success_runs_every_step_and_returns_results(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b"), ScriptedStep(name="c", after=["a"]))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        result = await run_saga(client, task_queue, s)
    assert result.results == {"a": "do a", "b": "do b", "c": "do c"}
    assert result.state.status is SagaStatus.SUCCEEDED
    assert [st.status for st in result.state.steps] == [StepStatus.SUCCEEDED] * 3
    assert did(s, "do") == {"a", "b", "c"} and did(s, "undo") == set()
    assert render_trace(result.state) == (
        "❗️ begin saga\n\n✔️ a\n✔️ b\n✔️ c\n\n❗️ all steps succeeded\n\n✔️ end saga (success)"
    )


async def test_application_error_undoes_what_succeeded_but_not_the_failed_step(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="book plane ticket", sleep=0.3),
        ScriptedStep(name="book hotel room", fail="no available hotel rooms"),
        ScriptedStep(name="buy tourist tickets", sleep=0.3),
        ScriptedStep(name="late", after=["book hotel room"]),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"book plane ticket", "buy tourist tickets"}
    assert "late" not in did(s, "do")
    assert failure.failed_step == "book hotel room"
    assert failure.reason == "no available hotel rooms"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.state.step("late").status is StepStatus.SKIPPED
    assert failure.state.step("book hotel room").status is StepStatus.FAILED
    assert failure.state.step("book plane ticket").status is StepStatus.COMPENSATED
    assert render_trace(failure.state) == (
        "❗️ begin saga\n\n"
        "✔️ book plane ticket\n"
        "❌ book hotel room (no available hotel rooms)\n"
        "✔️ buy tourist tickets\n"
        "⏭️ late (skipped)\n\n"
        "❗️ step failed: reverting\n\n"
        "✔️ undo book plane ticket\n"
        "✔️ undo buy tourist tickets\n\n"
        "❌ end saga (no available hotel rooms)"
    )


async def test_timed_out_step_is_uncertain_and_compensated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="slow", sleep=3, start_to_close=1, max_attempts=1),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"a", "slow"}
    slow = failure.state.step("slow")
    assert slow.uncertain and slow.outcome is StepStatus.FAILED
    assert failure.reason == "timed out (START_TO_CLOSE)"


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_retries_exhausted_is_a_failure_without_effect(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="flaky", always_retryable_failure=True, max_attempts=2),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    attempts = [e.attempt for e in JOURNAL[s.run] if e.step == "flaky" and e.kind == "do"]
    assert attempts == [1, 2]
    assert did(s, "undo") == {"a"}
    assert failure.reason.startswith("injected failure, attempt 2 of")


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_default_retry_policy_absorbs_transient_failures(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a", transient_failures=2))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        result = await run_saga(client, task_queue, s)
    assert result.state.status is SagaStatus.SUCCEEDED
    assert [e.attempt for e in JOURNAL[s.run]] == [1, 2, 3]


async def test_compensate_on_failure_undoes_the_failed_step(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"), ScriptedStep(name="b", fail="boom", compensate_on_failure=True)
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"a", "b"}


async def test_dependent_compensation_finishes_before_its_dependency_starts(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a", undo_sleep=0.1),
        ScriptedStep(name="b", after=["a"], undo_sleep=1.0),  # the slow compensation
        ScriptedStep(name="c", after=["b"], undo_sleep=0.5),
        ScriptedStep(name="x", sleep=1.0, fail="late failure"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"a", "b", "c"}
    assert entry(s, "undo", "c")[1] <= entry(s, "undo", "b")[0]
    assert entry(s, "undo", "b")[1] <= entry(s, "undo", "a")[0]
    orders = {st.name: st.compensation.order for st in failure.state.steps if st.compensation}
    assert orders == {"c": 0, "b": 1, "a": 2}


async def test_independent_compensations_run_in_parallel(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        *(ScriptedStep(name=n, undo_sleep=1.0) for n in "abcd"),
        ScriptedStep(name="x", sleep=0.2, fail="boom"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
    undos = [entry(s, "undo", n) for n in "abcd"]
    assert max(end for _, end in undos) - min(start for start, _ in undos) < 2.0


async def test_sequential_compensation_runs_in_reverse_completion_order(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="first", sleep=0.1),
        ScriptedStep(name="second", sleep=0.5),
        ScriptedStep(name="third", sleep=0.9),
        ScriptedStep(name="x", sleep=1.2, fail="boom"),
        parallel_compensation=False,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
    undos = [e.step for e in JOURNAL[s.run] if e.kind == "undo"]
    assert undos == ["third", "second", "first"]
    times = [entry(s, "undo", n) for n in undos]
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(times))


async def test_independent_steps_run_in_parallel(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(*(ScriptedStep(name=f"s{i}", sleep=1.0) for i in range(8)))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        began = time.monotonic()
        await run_saga(client, task_queue, s)
        elapsed = time.monotonic() - began
    assert elapsed < 3.0, f"8 parallel 1 s steps took {elapsed:.2f} s"


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_compensation_failing_for_good_does_not_stop_the_others(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a", undo_fail="airline API rejects the cancel"),
        ScriptedStep(name="b"),
        ScriptedStep(name="c", after=["a"], undo_transient_failures=2),
        ScriptedStep(name="x", sleep=0.3, fail="boom"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert did(s, "undo") == {"b", "c"}
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["a"]
    assert "manual intervention needed for: a" in failure.message
    assert failure.state.step("a").compensation.error == "airline API rejects the cancel"
    assert render_trace(failure.state).endswith(
        "❌ undo a (airline API rejects the cancel)\n\n"
        "❌ end saga (boom; manual intervention needed for: a)"
    )


async def test_saga_state_query_answers_after_close(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b", fail="nope"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
        handle = client.get_workflow_handle(f"saga-{s.run}")
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert state.status is SagaStatus.COMPENSATED
    assert [(st.name, st.status) for st in state.steps] == [
        ("a", StepStatus.COMPENSATED),
        ("b", StepStatus.FAILED),
    ]
    assert state.steps[0].started_at is not None and state.steps[0].ended_at is not None


async def test_ill_formed_saga_fails_the_workflow_at_once_without_scheduling(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a", after=["b"]), ScriptedStep(name="b", after=["a"]))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await client.start_workflow(
            ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "SagaDefinitionError"
    assert cause.non_retryable and "dependency cycle" in cause.message
    events = [e.event_type async for e in handle.fetch_history_events()]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in events
    assert events.count(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == 0


async def test_success_history_costs_exactly_what_hand_written_code_costs(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    # Distinct durations, so each completion gets its own workflow task in both runs.
    steps = [ScriptedStep(name=n, sleep=d) for n, d in (("a", 0.2), ("b", 0.6), ("c", 1.0))]
    saga, baseline = spec(*steps), spec(*steps)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await run_saga(client, task_queue, saga)
        await client.execute_workflow(
            HandWrittenParallel.run, baseline, id=f"hand-{baseline.run}", task_queue=task_queue
        )

    async def event_types(workflow_id: str) -> Counter[int]:
        handle = client.get_workflow_handle(workflow_id)
        return Counter([e.event_type async for e in handle.fetch_history_events()])

    ours = await event_types(f"saga-{saga.run}")
    theirs = await event_types(f"hand-{baseline.run}")
    assert ours == theirs
    for forbidden in (
        EventType.EVENT_TYPE_MARKER_RECORDED,
        EventType.EVENT_TYPE_TIMER_STARTED,
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    ):
        assert forbidden not in ours


async def test_cancel_in_flight_cancels_and_compensates_the_running_steps(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="slow", sleep=30, heartbeat_timeout=1),
        ScriptedStep(name="x", sleep=0.2, fail="boom"),
        cancel_in_flight=True,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        began = time.monotonic()
        failure = await fail_saga(client, task_queue, s)
        assert time.monotonic() - began < 10
    slow = failure.state.step("slow")
    assert slow.outcome is StepStatus.CANCELLED and slow.uncertain
    assert did(s, "undo") == {"slow"}


async def test_deadline_fails_and_compensates_a_saga_not_done_in_time(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="slow", sleep=30, heartbeat_timeout=1),
        timeout=1.5,
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        began = time.monotonic()
        failure = await fail_saga(client, task_queue, s)
        assert time.monotonic() - began < 10
    assert failure.failed_step is None
    assert failure.reason == "saga timed out after 1.5 seconds"
    assert did(s, "undo") == {"a", "slow"}
    assert render_trace(failure.state).count("saga timed out after 1.5 seconds: reverting") == 1


async def test_cancelling_the_workflow_compensates_then_ends_cancelled(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="slow", sleep=30, heartbeat_timeout=1),
        ScriptedStep(name="later", after=["slow"]),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await client.start_workflow(
            ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
        )
        while "a" not in did(s, "do"):
            await asyncio.sleep(0.1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert isinstance(caught.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert did(s, "undo") == {"a", "slow"}
    assert "later" not in did(s, "do")
    assert state.status is SagaStatus.COMPENSATED and state.reason == "saga cancelled"


@pytest.mark.parametrize(
    ("slow", "kind"),
    [
        (ScriptedStep(name="slow", sleep=5, start_to_close=1, max_attempts=1), "START_TO_CLOSE"),
        (ScriptedStep(name="slow", sleep=5, schedule_to_close=1), "SCHEDULE_TO_CLOSE"),
        (
            ScriptedStep(name="slow", sleep=5, silent=True, heartbeat_timeout=1, max_attempts=1),
            "HEARTBEAT",
        ),
    ],
)
async def test_every_kind_of_timeout_is_uncertain_and_compensated(
    client: Client, task_queue: str, worker: WorkerFactory, slow: ScriptedStep, kind: str
) -> None:
    s = spec(ScriptedStep(name="a"), slow)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fail_saga(client, task_queue, s)
    assert failure.reason == f"timed out ({kind})"
    assert failure.state.step("slow").uncertain
    assert did(s, "undo") == {"a", "slow"}


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_idempotency_key_is_stable_across_retries_and_shared_with_the_compensation(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a", transient_failures=2, undo_transient_failures=1),
        ScriptedStep(name="b", sleep=0.2, fail="boom"),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
    keys_of_a = {e.key for e in JOURNAL[s.run] if e.step == "a"}
    assert len([e for e in JOURNAL[s.run] if e.step == "a"]) == 5  # 3 do, 2 undo
    assert len(keys_of_a) == 1
    [key_of_b] = {e.key for e in JOURNAL[s.run] if e.step == "b"}
    assert key_of_b != next(iter(keys_of_a))
    assert key_of_b.startswith(f"saga-{s.run}/") and key_of_b.endswith("/scripted/b")


async def test_max_parallelism_bounds_the_steps_in_flight(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(*(ScriptedStep(name=f"s{i}", sleep=0.5) for i in range(6)), max_parallelism=2)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await run_saga(client, task_queue, s)
    spans = [(e.started, e.ended) for e in JOURNAL[s.run]]
    most = max(sum(1 for b, e in spans if b <= t < e) for t, _ in spans)
    assert most == 2


@pytest.mark.parametrize("edges", ["_deps", "_dependents"])
def test_steps_without_dependencies_are_scheduled_as_the_graph_would_schedule_them(
    edges: str,
) -> None:
    """Sagas without dependencies skip building the graph: the order (and so the
    commands, and the replay of recorded histories) must stay the graph's."""
    saga = Saga("wide")
    for name in "abcd":
        saga.step(name, do_step, compensate=undo_step)
    saga._definition.resolve()
    steps = saga.steps
    assert not saga._definition.linked
    fast = _in_order(steps, edges, linked=False)
    graph = TopologicalSorter({s: () for s in steps})
    assert not isinstance(fast, TopologicalSorter)
    graph.prepare()
    assert fast.get_ready() == graph.get_ready() == tuple(steps)
    for step in (steps[2], steps[0], steps[3], steps[1]):
        assert fast.is_active() and graph.is_active()
        assert fast.get_ready() == graph.get_ready() == ()
        fast.done(step)
        graph.done(step)
    assert not fast.is_active() and not graph.is_active()


def test_steps_with_dependencies_are_scheduled_along_the_graph() -> None:
    saga = Saga("chain")
    first = saga.step("a", do_step, compensate=undo_step)
    saga.step("b", do_step, compensate=undo_step, after=[first])
    saga._definition.resolve()
    steps = saga.steps
    assert saga._definition.linked
    assert [s.name for s in _in_order(steps, "_deps", linked=True).get_ready()] == ["a"]
    assert [s.name for s in _in_order(steps, "_dependents", linked=True).get_ready()] == ["b"]


def _sandbox_copies(module: str) -> set[int]:
    """The ids of the workflow sandbox's copies of ``module`` still alive."""
    real = sys.modules[module].__dict__
    return {
        id(o)
        for o in gc.get_objects()
        # type(), not isinstance(): the sandbox's restricted proxies refuse __class__.
        if type(o) is dict and o.get("__name__") == module and o is not real
    }


async def test_a_finished_saga_leaves_nothing_for_a_later_garbage_collection(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """Once its workflow run is gone, one collection frees all of it, the sandbox's copy
    of the workflow's module included: nothing of the engine's outlives the run (a
    worker's full collections would otherwise be more frequent and longer)."""
    gc.collect()
    before = _sandbox_copies(ScriptedSaga.__module__)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        for _ in range(3):
            await run_saga(client, task_queue, spec(ScriptedStep(name="a"), ScriptedStep(name="b")))
    gc.collect()
    assert _sandbox_copies(ScriptedSaga.__module__) - before == set()


def _state_of_a_large_saga(*, pivot: bool) -> SagaState:
    """150 steps; without a pivot the last one failed and the rest were undone; with
    one, step 0 is the pivot, step 1 failed after it for good and the others never ran."""
    if not pivot:
        steps = [
            StepState(
                name=f"s{i}",
                outcome=StepStatus.SUCCEEDED,
                compensation=CompensationState(
                    name=f"undo s{i}", status=StepStatus.SUCCEEDED, order=i
                ),
            )
            for i in range(149)
        ]
        steps.append(StepState(name="last", outcome=StepStatus.FAILED, error="full"))
        return SagaState(
            name="large", status=SagaStatus.COMPENSATED, steps=steps,
            failed_step="last", reason="full",
        )  # fmt: skip
    steps = [StepState(name="s0", outcome=StepStatus.SUCCEEDED)]
    steps.append(
        StepState(name="s1", outcome=StepStatus.FAILED, error="no truck", after_pivot=True)
    )
    steps += [
        StepState(name=f"s{i}", outcome=StepStatus.SKIPPED, after_pivot=True) for i in range(2, 150)
    ]
    return SagaState(
        name="large", status=SagaStatus.COMPENSATION_FAILED, steps=steps,
        failed_step="s1", reason="no truck", pivot="s0",
    )  # fmt: skip


def test_a_large_failure_carries_a_bounded_state_with_its_verdict() -> None:
    state = _state_of_a_large_saga(pivot=False)
    kept = bounded(state, keep_all_up_to=100)
    assert [s.name for s in kept.steps] == ["last"] and kept.omitted_steps == 149
    assert (kept.status, kept.failed_step, kept.reason) == (state.status, "last", "full")
    small = bounded(state, keep_all_up_to=150)
    assert small is state and small.omitted_steps == 0


def test_a_large_failure_past_the_pivot_keeps_the_pivot_and_who_needs_a_human() -> None:
    state = _state_of_a_large_saga(pivot=True)
    assert state.past_pivot and len(state.needs_human) == 149
    kept = bounded(state, keep_all_up_to=100)
    names = [s.name for s in kept.steps]
    assert names[:2] == ["s0", "s1"] and len(names) == 101 and kept.omitted_steps == 49
    assert kept.past_pivot and kept.pivot == "s0"
    assert kept.needs_human == names[1:]
    failure = SagaFailed(kept)
    assert failure.needs_human[:2] == ["s1", "s2"]
    assert failure.message.startswith("s1: no truck (after the pivot s0); manual intervention")


def test_past_the_pivot_only_the_steps_that_did_not_do_their_part_need_a_human() -> None:
    after = {"after_pivot": True}
    state = SagaState(
        name="order", status=SagaStatus.NEEDS_HUMAN, failed_step="ship", reason="no truck",
        pivot="pay",
        steps=[
            StepState(name="pay", outcome=StepStatus.SUCCEEDED),
            StepState(name="ship", outcome=StepStatus.FAILED, error="no truck", **after),
            StepState(name="gift", outcome=StepStatus.SKIPPED, note=CONDITION_NOT_MET, **after),
            StepState(name="old", outcome=StepStatus.SKIPPED, note=NOT_IN_THIS_VERSION, **after),
            StepState(name="notify", outcome=StepStatus.SKIPPED, **after),
            StepState(name="done", outcome=StepStatus.SUCCEEDED, **after),
        ],
    )  # fmt: skip
    assert state.needs_human == ["ship", "notify"]
    resolved = state.model_copy(
        update={"steps": [s.model_copy(update={"resolved": "by hand"}) for s in state.steps]}
    )
    assert resolved.needs_human == []


def test_a_deadline_reads_as_people_write_durations() -> None:
    from temporal_saga._trace import duration

    assert duration(timedelta(days=2)) == "2 days"  # not "2 days, 0:00:00"
    assert duration(timedelta(hours=1, minutes=30)) == "1 hour 30 minutes"
    assert duration(timedelta(seconds=1.5)) == "1.5 seconds"
    assert duration(timedelta()) == "0 seconds"
