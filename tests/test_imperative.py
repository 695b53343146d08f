"""The imperative form, `async with Saga(...) as saga:`, at every phase of a saga.

``BlockSaga`` (tests/scripted.py) books: flight; insurance if the flight's result says
so (a branch on a result); hotel, or the partner hotel if the hotel fails (an
alternative); ``fan_out`` tickets side by side (a fan-out over run-time data); pay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from temporal_saga import Saga, SagaDefinitionError, SagaFailed, SagaState, SagaStatus, StepStatus
from temporal_saga._protocol import SAGA_STATE_QUERY
from temporal_saga.client import render_trace, state_from_history

from .conftest import WorkerFactory
from .helpers import (
    ACTIVITIES,
    WORKFLOWS,
    did,
    ends_cancelled,
    entry,
    spec,
    starts_past_the_long_history_cap,
    wait_for,
)
from .scripted import (
    JOURNAL,
    BlockSaga,
    BlockSpec,
    NestedBlockSaga,
    NestedSpec,
    PivotBlockSaga,
    ScriptedSaga,
    ScriptedStep,
    do_step,
)


def block(**options: Any) -> BlockSpec:
    return BlockSpec(run=str(uuid.uuid4()), **options)


async def start(client: Client, queue: str, s: BlockSpec) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(BlockSaga.run, s, id=f"block-{s.run}", task_queue=queue)


async def fails(handle: WorkflowHandle[Any, Any]) -> SagaFailed:
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None, caught.value.cause
    return failure


async def state_of(handle: WorkflowHandle[Any, Any]) -> SagaState:
    return await handle.query(SAGA_STATE_QUERY, result_type=SagaState)


async def cancelled_once(
    client: Client, queue: str, s: BlockSpec, moment: Callable[[SagaState], bool]
) -> SagaState:
    """Start the block saga, cancel it once ``moment`` holds; its state once cancelled."""
    handle = await start(client, queue, s)
    await wait_for(handle, moment)
    await handle.cancel()
    await ends_cancelled(handle)
    return await state_of(handle)


TICKETS = {"ticket 0", "ticket 1"}


def step_is(name: str, status: StepStatus) -> Callable[[SagaState], bool]:
    """Whether the saga has a step ``name`` with this status (steps appear as added)."""
    return lambda state: any(x.name == name and x.status is status for x in state.steps)


async def test_branch_and_fan_out_succeed_and_read_like_a_saga(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        assert await handle.result() == "booked"
        state = await state_of(handle)
    assert state.status is SagaStatus.SUCCEEDED
    assert [step.name for step in state.steps] == [
        "flight",
        "insurance",
        "hotel",
        "ticket 0",
        "ticket 1",
        "pay",
    ]
    assert did(s, "do") == {"flight", "insurance", "hotel", "pay", *TICKETS}
    assert did(s, "undo") == set()
    assert render_trace(state).startswith("❗️ begin saga\n\n✔️ flight\n✔️ insurance\n")


async def test_a_caught_failure_tries_the_alternative_and_the_saga_succeeds(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fail={"hotel": "no available hotel rooms"})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        assert await handle.result() == "booked"
        state = await state_of(handle)
        live = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert state.status is SagaStatus.SUCCEEDED
    assert state.step("hotel").status is StepStatus.FAILED
    assert state.step("partner hotel").status is StepStatus.SUCCEEDED
    assert did(s, "undo") == set()  # the hotel failed: nothing of it to undo
    trace = render_trace(state)
    assert "❌ hotel (no available hotel rooms)\n✔️ partner hotel" in trace
    # Not "all steps succeeded" under a ❌ line.
    assert trace.endswith("❗️ saga succeeded: its code went on past ❌\n\n✔️ end saga (success)")
    assert live.current_details == trace  # the Web UI's trace says the same


async def test_a_late_failure_undoes_everything_in_the_code_s_reverse_order(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = (
        block(fail={"pay": "card declined"}, fail_seen=None)
        if False
        else block(fail={"pay": "card declined"})
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await start(client, task_queue, s))
    assert failure.failed_step == "pay" and failure.reason == "card declined"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert did(s, "undo") == {"flight", "insurance", "hotel", *TICKETS}
    # Each undo starts after the undos of what came after it; the tickets side by side.
    ended = {name: entry(s, "undo", name)[1] for name in did(s, "undo")}
    began = {name: entry(s, "undo", name)[0] for name in did(s, "undo")}
    assert max(ended[t] for t in TICKETS) <= began["hotel"]
    assert ended["hotel"] <= began["insurance"] and ended["insurance"] <= began["flight"]
    assert failure.state.step("pay").compensation is None  # it failed: no effect
    # The same from the saga's own record, which no timing margin can blur: the order
    # in which the undos started, and their workflow times.
    undo = {name: failure.state.step(name).compensation for name in did(s, "undo")}
    order = sorted(undo, key=lambda name: undo[name].order)  # type: ignore[union-attr]
    assert set(order[:2]) == TICKETS and order[2:] == ["hotel", "insurance", "flight"]
    for later, earlier in [("hotel", t) for t in TICKETS] + [
        ("insurance", "hotel"),
        ("flight", "insurance"),
    ]:
        assert undo[earlier].ended_at <= undo[later].started_at  # type: ignore[union-attr,operator]
    # What each step waited for (the arrows of `show --graph`): the awaits before it.
    assert failure.state.step("flight").after == []
    assert failure.state.step("insurance").after == ["flight"]
    assert failure.state.step("hotel").after == ["insurance"]
    assert all(failure.state.step(t).after == ["hotel"] for t in TICKETS)


async def test_an_uncaught_step_failure_leaves_the_block_and_undoes_what_ran(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fail={"hotel": "no available hotel rooms"}, catch=False)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await start(client, task_queue, s))
    assert failure.failed_step == "hotel" and failure.reason == "no available hotel rooms"
    assert did(s, "do") == {"flight", "insurance"}
    assert did(s, "undo") == {"flight", "insurance"}


async def test_the_block_s_own_error_undoes_everything_without_quoting_it(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(raise_at_end=True)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await start(client, task_queue, s))
    assert failure.failed_step is None
    assert failure.reason == "the saga's code raised ValueError"
    assert did(s, "undo") == {"flight", "insurance", "hotel", "pay", *TICKETS}


async def test_a_failure_nobody_awaited_fails_the_saga(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(unawaited=True, fail={"note": "the note service is down"})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await start(client, task_queue, s))
    assert failure.failed_step == "note" and failure.reason == "the note service is down"
    assert "flight" in did(s, "undo")


async def test_a_caught_timeout_is_undone_even_when_the_saga_succeeds(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """The hotel timed out: it may have booked. The partner hotel stands in, and the
    hotel's compensation still runs, so nothing is left booked twice."""
    s = block(sleep={"hotel": 5}, start_to_close={"hotel": 1})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        assert await handle.result() == "booked"
        state = await state_of(handle)
    assert state.status is SagaStatus.SUCCEEDED
    hotel = state.step("hotel")
    assert hotel.uncertain and hotel.compensation is not None
    assert hotel.compensation.status is StepStatus.SUCCEEDED
    assert did(s, "undo") == {"hotel"}


# --- cancellation and deadlines, at each phase ------------------------------------


async def test_a_cancel_mid_way_undoes_what_ran_and_ends_cancelled(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(sleep={"ticket 1": 30})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        state = await cancelled_once(
            client, task_queue, s, lambda st: any(x.name == "ticket 1" for x in st.steps)
        )
    assert state.status is SagaStatus.COMPENSATED
    assert state.step("ticket 1").status is StepStatus.COMPENSATED  # cancelled: uncertain
    assert did(s, "undo") == {"flight", "insurance", "hotel", "ticket 0", "ticket 1"}
    assert "pay" not in {x.name for x in state.steps}


async def test_a_cancel_while_compensating_lets_the_undo_finish(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fail={"pay": "card declined"}, undo_sleep={"insurance": 2})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        state = await cancelled_once(
            client, task_queue, s, step_is("insurance", StepStatus.COMPENSATING)
        )
    assert state.status is SagaStatus.COMPENSATED
    assert did(s, "undo") == {"flight", "insurance", "hotel", *TICKETS}


async def test_a_cancel_before_the_first_step_runs_nothing(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(search_attributes=True)
    handle = await start(client, task_queue, s)
    await handle.cancel()  # before any worker has seen the workflow
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await ends_cancelled(handle)
    assert did(s, "do") == set()


async def test_the_deadline_stops_the_block_and_undoes_what_ran(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(sleep={"ticket 0": 30}, timeout=2)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await start(client, task_queue, s))
    assert failure.reason == "saga timed out after 2 seconds"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert {"flight", "insurance", "hotel", "ticket 0"} <= did(s, "undo")


async def test_history_alone_tells_the_same_story(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fail={"pay": "card declined"})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        failure = await fails(handle)
    history = await handle.fetch_history()
    rebuilt = await state_from_history(history.events, client.data_converter)
    assert render_trace(rebuilt) == render_trace(failure.state)


@pytest.mark.timeout(300)
async def test_a_run_time_fan_out_of_a_thousand_completes_and_compensates(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fan_out=1000, fail={"pay": "card declined"})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        failure = await fails(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert len([n for n in did(s, "undo") if n.startswith("ticket ")]) == 1000
    # The imperative form keeps the cap for long histories too (40 in flight past
    # 2,000 events), forward and while compensating.
    assert await starts_past_the_long_history_cap(handle) == []


def test_misuse_is_refused_clearly() -> None:
    saga = Saga("s")
    saga.step("a", do_step)
    with pytest.raises(SagaDefinitionError, match="steps added before `async with`"):
        saga.__aenter__().send(None)
    with pytest.raises(SagaDefinitionError, match="await a step only inside `async with"):
        saga.steps[0].__await__().send(None)


@pytest.mark.parametrize("chain", [True, False], ids=["chain", "side by side"])
async def test_the_imperative_form_costs_the_same_history_as_the_graph_form(
    client: Client, task_queue: str, worker: WorkerFactory, chain: bool
) -> None:
    from bench.sagas import ACTIVITIES as BENCH_ACTIVITIES
    from bench.sagas import HelperSaga, ImperativeHelperSaga, bench_spec

    spec = bench_spec([f"s{i}" for i in range(6)], chain=chain)
    events = {}
    async with worker(workflows=[HelperSaga, ImperativeHelperSaga], activities=BENCH_ACTIVITIES):
        for form in (HelperSaga, ImperativeHelperSaga):
            handle = await client.start_workflow(
                form.run, spec, id=f"cost-{uuid.uuid4()}", task_queue=task_queue
            )
            await handle.result()
            events[form] = [e.event_type async for e in handle.fetch_history_events()]
    graph, imperative = events[HelperSaga], events[ImperativeHelperSaga]
    if chain:  # one workflow task per step in both: the very same history
        assert imperative == graph
    else:  # completions batch into workflow tasks by timing; the activities are the same
        scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        assert imperative.count(scheduled) == graph.count(scheduled) == 6


# --- a pivot in the imperative form -----------------------------------------------


async def run_pivot_block(client: Client, queue: str, s: BlockSpec) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        PivotBlockSaga.run, s, id=f"pivot-block-{s.run}", task_queue=queue
    )


async def test_a_failure_before_the_pivot_is_undone(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(fail={"pay": "card declined"})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await run_pivot_block(client, task_queue, s))
    assert failure.failed_step == "pay" and failure.state.status is SagaStatus.COMPENSATED
    assert did(s, "undo") == {"reserve"}


@pytest.mark.time_skipping  # retry backoffs are timers
async def test_after_the_pivot_a_step_is_retried_until_it_succeeds(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(ship_failures=4)  # more than the saga's 3 attempts
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await run_pivot_block(client, task_queue, s)
        assert await handle.result() == "shipped"
        state = await state_of(handle)
    assert state.past_pivot and state.step("ship").after_pivot
    assert max(e.attempt for e in JOURNAL[s.run] if e.step == "ship") == 5
    assert did(s, "undo") == set()


async def test_a_compensation_after_the_pivot_is_refused_and_nothing_is_undone(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = block(ship_compensated=True)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await fails(await run_pivot_block(client, task_queue, s))
    assert "comes after the pivot 'pay', so it is retried until it succeeds" in failure.reason
    assert did(s, "undo") == set()  # past the point of no return


async def test_a_nested_saga_as_a_step_is_undone_by_its_compensation(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """The child saga succeeded; the sibling after it fails: the parent runs the child
    step's compensation (the child's own steps stay as the child left them)."""
    run = str(uuid.uuid4())
    child = spec(ScriptedStep(name="room"))
    nested = NestedSpec(run=run, child=child, sibling_fails=True)
    async with worker(workflows=[NestedBlockSaga, ScriptedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            NestedBlockSaga.run, nested, id=f"nested-block-{run}", task_queue=task_queue
        )
        failure = await fails(handle)
    assert failure.failed_step == "sibling" and failure.state.status is SagaStatus.COMPENSATED
    assert {e.step for e in JOURNAL[run] if e.kind == "undo" and e.ok} == {"child saga"}
    assert did(child, "do") == {"room"}


async def test_a_cancel_while_steps_wait_for_a_slot_leaves_them_unstarted(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """max_parallelism 2, 12 tickets: most wait their turn when the cancel lands."""
    s = block(fan_out=12, max_parallelism=2, sleep={f"ticket {i}": 1.0 for i in range(12)})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        state = await cancelled_once(client, task_queue, s, step_is("ticket 0", StepStatus.RUNNING))
    assert state.status is SagaStatus.COMPENSATED
    waited = [x for x in state.steps if x.name.startswith("ticket ") and x.started_at is None]
    assert waited and all(x.status is StepStatus.SKIPPED for x in waited)
    ran = {x.name for x in state.steps if x.started_at is not None}
    assert did(s, "undo") == ran - {"pay"}
