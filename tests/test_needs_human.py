"""When a human is needed (DESIGN section 7), on a real server.

A saga whose compensation fails for good (or that fails past its pivot) waits in
NEEDS_HUMAN with its workflow open; operators retry, resolve or give up through
Workflow Updates, validated before anything reaches history. Every action is tried
at each phase of a saga: before its first step, mid-way, while compensating, while
waiting, after closing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, get_type_hints

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_saga import SagaState, SagaStatus, StepStatus, _desk, _sdk
from temporal_saga.client import (
    ActionRejected,
    give_up,
    render_trace,
    resolve_step,
    retry_step,
    state_from_history,
)
from temporal_saga.client._cli import COMPENSATED, NEEDS_HUMAN

from .conftest import WorkerFactory, temporal_cli
from .helpers import ACTIVITIES, UI_URL, WORKFLOWS, cli, did, saga_failure, spec, start, wait_for
from .sandbox_probe import HandlerTablesInTheSandbox
from .scripted import (
    JOURNAL,
    HumanBlockSaga,
    NestedSaga,
    NestedSpec,
    Script,
    ScriptedSpec,
    ScriptedStep,
    SlottedSaga,
)


def waiting(s: ScriptedSpec) -> ScriptedSpec:
    return s.model_copy(update={"human_timeout": None})


def refund_refused(**options: Any) -> ScriptedSpec:
    """a and b succeed, c fails: b's compensation fails for good, a's succeeds."""
    return waiting(
        spec(
            ScriptedStep(name="a"),
            ScriptedStep(name="b", undo_fail="refund refused"),
            ScriptedStep(name="c", after=["a", "b"], fail="no rooms"),
            **options,
        )
    )


def ship_fails_past_the_pivot() -> ScriptedSpec:
    """pay is the pivot; ship, after it, fails for good; notify waits for ship."""
    return waiting(
        spec(
            ScriptedStep(name="pay", pivot=True, compensate=False),
            ScriptedStep(name="ship", after=["pay"], compensate=False, fail="no truck"),
            ScriptedStep(name="notify", after=["ship"], compensate=False),
        )
    )


def needs_human(state: SagaState) -> bool:
    return state.status is SagaStatus.NEEDS_HUMAN


async def start_waiting(
    client: Client, task_queue: str, s: ScriptedSpec
) -> WorkflowHandle[Any, Any]:
    """Start the saga and return once it waits for a human."""
    handle = await start(client, task_queue, s)
    await wait_for(handle, needs_human)
    return handle


async def update_events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    history = await handle.fetch_history()
    kinds = (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    )
    return [e for e in history.events if e.event_type in kinds]


async def test_an_operator_reaches_a_saga_in_a_workflow_class_with_slots_only(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=[SlottedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            SlottedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
        )
        await wait_for(handle, needs_human)
        answer = await give_up(handle, note="written off", by="dave")
        assert answer == "saga 'scripted' gives up: it ends COMPENSATION_FAILED"
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED


@pytest.mark.parametrize("handler_tables", [True, False], ids=["fast", "public-registration"])
async def test_a_failed_compensation_waits_then_a_retry_with_a_new_argument_undoes_it(
    client: Client,
    task_queue: str,
    worker: WorkerFactory,
    handler_tables: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not handler_tables:  # as with an SDK whose internals differ: the public functions
        monkeypatch.setattr(_sdk, "handler_tables", lambda: None)
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        state = await wait_for(handle, needs_human)
        # What could be undone was undone first; the workflow stays open.
        assert did(s, "undo") == {"a"}
        assert state.needs_human == ["b"]
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        trace = render_trace(state)
        assert "❌ undo b (refund refused)" in trace
        assert trace.endswith("❗️ waiting for a human: b")
        # The same retry fails the same way: the saga says so and keeps waiting.
        answer = await retry_step(handle, "b", by="alice")
        assert answer == "undo b: failed again: refund refused"
        # A new argument (the compensation's Script, without the failure) undoes it.
        fixed = Script(run=s.run, step="b").model_dump()
        assert await retry_step(handle, "b", arg=fixed, by="bob") == "undo b: compensated"
        failure = await saga_failure(handle)
    assert did(s, "undo") == {"a", "b"}
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.needs_human == []
    assert [(a.action, a.step, a.by) for a in failure.state.actions] == [
        ("retry", "b", "alice"),
        ("retry", "b", "bob"),
    ]
    trace = render_trace(failure.state)
    assert "✔️ undo b\n" in trace + "\n"
    assert "👤 retry b (failed again: refund refused; by alice)" in trace
    assert "👤 retry b (compensated; by bob)" in trace
    assert trace.endswith("❌ end saga (no rooms)")
    # The same story from history alone.
    rebuilt = await state_from_history(
        (await handle.fetch_history()).events, client.data_converter, workflow_id=handle.id
    )
    assert rebuilt.status is SagaStatus.COMPENSATED
    assert rebuilt.step("b").compensation.attempts == 1  # type: ignore[union-attr]
    assert len(await update_events(handle)) == 4


async def test_resolving_by_hand_ends_the_saga_compensated_with_the_note_in_the_trace(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        answer = await resolve_step(handle, "b", note="refunded by phone", by="carol")
        assert answer == "b: resolved by hand"
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.state.step("b").resolved == "refunded by phone"
    trace = render_trace(failure.state)
    assert "✔️ undo b (resolved by hand: refunded by phone)" in trace
    assert "👤 resolve b (refunded by phone; by carol)" in trace


async def test_giving_up_ends_the_saga_compensation_failed(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        answer = await give_up(handle, note="written off", by="dave")
        assert answer == "saga 'scripted' gives up: it ends COMPENSATION_FAILED"
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["b"]
    assert render_trace(failure.state).endswith(
        "👤 give up (written off; by dave)\n\n"
        "❌ end saga (no rooms; manual intervention needed for: b)"
    )


async def test_wrong_actions_are_rejected_without_touching_history(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        before = len((await handle.fetch_history()).events)
        with pytest.raises(ActionRejected, match=r"step 'a' does not need a human; these do: b"):
            await resolve_step(handle, "a", note="x")
        with pytest.raises(ActionRejected, match=r"step 'nope' does not need a human"):
            await retry_step(handle, "nope")
        with pytest.raises(ActionRejected, match=r"no saga here waits for a human"):
            await give_up(handle, note="x", saga="another saga")
        with pytest.raises(ValueError):
            await resolve_step(handle, "b", note="")  # a note is required
        assert len((await handle.fetch_history()).events) == before
        await resolve_step(handle, "b", note="done")
        await saga_failure(handle)
        # After closing, the server refuses any update.
        with pytest.raises(Exception, match=r"(?i)completed|closed|not found"):
            await give_up(handle, note="too late")


async def test_actions_before_the_first_step_mid_way_and_while_compensating_are_rejected(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = waiting(
        spec(
            ScriptedStep(name="a", sleep=1.0, undo_sleep=1.5),
            ScriptedStep(name="b", after=["a"], fail="no rooms"),
        )
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, lambda st: st.step("a").outcome is StepStatus.RUNNING)
        with pytest.raises(ActionRejected, match=r"no saga here waits.*'scripted' is RUNNING"):
            await resolve_step(handle, "a", note="x")
        await wait_for(handle, lambda st: st.status is SagaStatus.COMPENSATING)
        with pytest.raises(ActionRejected, match=r"'scripted' is COMPENSATING"):
            await give_up(handle, note="x")
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED  # nothing needed a human
    assert failure.state.actions == []
    assert await update_events(handle) == []


async def test_a_retry_runs_once_at_a_time_and_giving_up_cancels_it(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        slow = Script(run=s.run, step="b", sleep=1.5).model_dump()
        assert await retry_step(handle, "b", arg=slow) == "undo b: compensated"
        await wait_for(handle, lambda st: st.status is SagaStatus.COMPENSATED)
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        # A retry that would never end (its activity fails retryably, forever).
        endless = Script(run=s.run, step="b", always_retryable_failure=True).model_dump()
        retry = asyncio.create_task(retry_step(handle, "b", arg=endless))
        await wait_for(handle, lambda st: st.step("b").status is StepStatus.COMPENSATING)
        with pytest.raises(ActionRejected, match="'b' is being retried already"):
            await resolve_step(handle, "b", note="x")
        # Giving up is always possible: it cancels the retry.
        await give_up(handle, note="the airline will not refund")
        assert await retry == "undo b: failed again: cancelled"
        failure = await saga_failure(handle)
        history = await handle.fetch_history()
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    assert failure.needs_human == ["b"]
    # History alone tells the same story: the cancelled retry failed b's undo again.
    rebuilt = await state_from_history(history.events, client.data_converter)
    assert rebuilt.status is SagaStatus.COMPENSATION_FAILED and rebuilt.needs_human == ["b"]
    assert rebuilt.step("b").status is StepStatus.COMPENSATION_FAILED
    assert [a.action for a in rebuilt.actions] == [a.action for a in failure.state.actions]
    assert [a.action for a in rebuilt.actions] == ["give up", "retry"]
    assert render_trace(rebuilt) == render_trace(failure.state)


async def test_human_timeout_ends_the_wait_compensation_failed(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused().model_copy(update={"human_timeout": 1.0})
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATION_FAILED
    [timed_out] = failure.state.actions
    assert (timed_out.action, timed_out.by) == ("time out", None)
    assert "❗️ time out (no operator acted within 1 second)" in render_trace(failure.state)


async def test_a_cancel_while_waiting_ends_the_wait_and_the_workflow_is_cancelled(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert isinstance(caught.value.cause, CancelledError)
        state = await handle.query("saga_state", result_type=SagaState)
    assert state.status is SagaStatus.COMPENSATION_FAILED
    assert [a.action for a in state.actions] == ["cancel"]


async def test_a_cancel_during_compensation_does_not_wait_for_a_human(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = waiting(
        spec(
            ScriptedStep(name="a", undo_sleep=1.0, undo_fail="refund refused"),
            ScriptedStep(name="b", after=["a"], fail="no rooms"),
        )
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        await wait_for(handle, lambda st: st.status is SagaStatus.COMPENSATING)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        state = await handle.query("saga_state", result_type=SagaState)
    assert state.status is SagaStatus.COMPENSATION_FAILED
    assert state.needs_human == ["a"] and state.actions == []


async def test_past_the_pivot_a_retried_step_lets_the_saga_go_on_to_success(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = ship_fails_past_the_pivot()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        state = await wait_for(handle, needs_human)
        assert state.needs_human == ["ship", "notify"]
        with pytest.raises(ActionRejected, match="'notify' waits for ship"):
            await retry_step(handle, "notify")
        fixed = Script(run=s.run, step="ship").model_dump()
        assert await retry_step(handle, "ship", arg=fixed) == "ship: succeeded"
        result = await handle.result()  # notify ran by itself once ship had
    assert did(s, "do") == {"pay", "ship", "notify"}
    final = result.state
    assert final.status is SagaStatus.SUCCEEDED
    assert final.needs_human == []
    assert render_trace(final).endswith("❗️ all steps succeeded\n\n✔️ end saga (success)")


async def test_past_the_pivot_a_step_resolved_by_hand_lets_the_next_ones_run(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = ship_fails_past_the_pivot()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        await resolve_step(handle, "ship", note="sent by courier")
        result = await handle.result()
    final = result.state
    assert final.status is SagaStatus.SUCCEEDED
    assert "✔️ ship (resolved by hand: sent by courier)" in render_trace(final)
    assert did(s, "do") == {"pay", "notify"}


async def test_past_the_pivot_a_step_skipped_by_its_condition_needs_no_human(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = waiting(
        spec(
            ScriptedStep(name="pay", pivot=True, compensate=False),
            ScriptedStep(name="ship", after=["pay"], compensate=False, fail="no truck"),
            ScriptedStep(name="gift", after=["pay"], compensate=False, when=("pay", "never")),
            ScriptedStep(name="notify", after=["ship"], compensate=False),
        )
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start(client, task_queue, s)
        state = await wait_for(handle, needs_human)
        assert state.needs_human == ["ship", "notify"]
        with pytest.raises(ActionRejected, match="'gift' does not need a human"):
            await resolve_step(handle, "gift", note="x")
        await resolve_step(handle, "ship", note="sent by courier")
        result = await handle.result()
    final = result.state
    assert final.status is SagaStatus.SUCCEEDED and final.needs_human == []
    assert final.step("gift").status is StepStatus.SKIPPED
    assert did(s, "do") == {"pay", "notify"}


async def test_the_state_rebuilt_from_history_shows_the_wait_and_who_did_what(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        await retry_step(handle, "b", by="alice")
    # No worker: the history alone says the saga waits, and what was tried.
    events = (await handle.fetch_history()).events
    rebuilt = await state_from_history(events, client.data_converter, workflow_id=handle.id)
    assert rebuilt.status is SagaStatus.NEEDS_HUMAN
    assert rebuilt.needs_human == ["b"]
    assert [(a.action, a.step, a.note, a.by) for a in rebuilt.actions] == [
        ("retry", "b", "failed again: refund refused", "alice")
    ]
    assert render_trace(rebuilt).endswith(
        "❗️ waiting for a human: b\n\n👤 retry b (failed again: refund refused; by alice)"
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await resolve_step(handle, "b", note="refunded by phone", by="carol")
        await saga_failure(handle)
    events = (await handle.fetch_history()).events
    # Without the SagaFailed details (as with encrypted ones and no key), from events.
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED]
    failed[
        0
    ].workflow_execution_failed_event_attributes.failure.application_failure_info.ClearField(
        "details"
    )
    rebuilt = await state_from_history(events, client.data_converter, workflow_id=handle.id)
    assert rebuilt.status is SagaStatus.COMPENSATED
    assert rebuilt.step("b").resolved == "refunded by phone"
    assert [a.by for a in rebuilt.actions] == ["alice", "carol"]


async def test_operators_act_from_the_command_line_and_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused(search_attributes=True)
    workflow_id = f"saga-{s.run}"
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
        for _ in range(50):  # visibility is eventually consistent
            listed = await asyncio.to_thread(cli, env, "list", "--needs-human", "--limit", "500")
            if workflow_id in listed.stdout:
                break
            await asyncio.sleep(0.2)
        row = next(line for line in listed.stdout.splitlines() if workflow_id in line)
        assert row.split()[1:] == ["NEEDS_HUMAN", "RUNNING", "b"]
        # The same list in the Web UI, a link to keep (test_webui.py opens it).
        query = "SagaStatus%3D%22NEEDS_HUMAN%22"
        ui = UI_URL.rstrip("/")
        assert listed.stdout.endswith(
            f"\nWeb UI: {ui}/namespaces/default/workflows?query={query}\n"
        )
        shown = await asyncio.to_thread(cli, env, "show", workflow_id)
        assert shown.returncode == NEEDS_HUMAN
        assert "❗️ waiting for a human: b" in shown.stdout

        wrong = await asyncio.to_thread(cli, env, "resolve", workflow_id, "a", "--note", "x")
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == (
            f"temporal-saga: {workflow_id}: rejected: saga 'scripted': step 'a' does not "
            "need a human; these do: b"
        )
        again = await asyncio.to_thread(cli, env, "retry", workflow_id, "b", "--by", "alice")
        assert again.returncode == 1, again.stderr  # a script can tell it failed
        assert again.stdout == f"{workflow_id}: undo b: failed again: refund refused\n"

        # The temporal CLI sends the same update, its input as JSON.
        update = await asyncio.to_thread(
            temporal_cli,
            env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            workflow_id,
            "--name",
            "saga_resolve",
            "--input",
            json.dumps({"step": "b", "note": "refunded by phone", "by": "eve"}),
        )
        assert update.returncode == 0, update.stderr
        assert "b: resolved by hand" in update.stdout
        await saga_failure(handle)
    shown = await asyncio.to_thread(cli, env, "show", workflow_id)
    assert shown.returncode == COMPENSATED
    assert "✔️ undo b (resolved by hand: refunded by phone)" in shown.stdout
    assert "👤 resolve b (refunded by phone; by eve)" in shown.stdout
    late = await asyncio.to_thread(cli, env, "give-up", workflow_id, "--note", "x")
    assert late.returncode == 1 and f"{workflow_id}: cannot act:" in late.stderr


async def test_the_operators_guide_example(
    client: Client, task_queue: str, worker: WorkerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    s = refund_refused()
    workflow_id = f"saga-{s.run}"
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await wait_for(await start(client, task_queue, s), needs_human)
        # As docs/operators.md shows it:
        handle = client.get_workflow_handle(workflow_id)
        print(await retry_step(handle, "b"))  # undo b: failed again: refund refused
        try:
            await resolve_step(handle, "a", note="refunded by phone")
        except ActionRejected as err:  # nothing was recorded
            print(err)  # saga 'scripted': step 'a' does not need a human; these do: b
        print(await resolve_step(handle, "b", note="refunded by phone"))  # b: resolved by hand
        await saga_failure(handle)
    assert capsys.readouterr().out.splitlines() == [
        "undo b: failed again: refund refused",
        "saga 'scripted': step 'a' does not need a human; these do: b",
        "b: resolved by hand",
    ]


async def test_a_nested_saga_waits_in_its_own_workflow_and_the_parent_goes_on_after(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    child = waiting(
        spec(
            ScriptedStep(name="room", undo_fail="refund refused"),
            ScriptedStep(name="pay", sleep=0.3, fail="declined"),
        )
    )
    n = NestedSpec(run=child.run, child=child, human_timeout=None)
    async with worker(workflows=[*WORKFLOWS, NestedSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            NestedSaga.run, n, id=f"nested-{n.run}", task_queue=task_queue
        )
        inner = client.get_workflow_handle(f"nested-{n.run}/parent/child saga")
        await wait_for(inner, needs_human)
        # The parent's step runs while its child waits; the parent is not the one to act.
        parent = await wait_for(
            handle, lambda st: st.step("sibling").outcome is StepStatus.SUCCEEDED
        )
        assert parent.step("child saga").outcome is StepStatus.RUNNING
        with pytest.raises(ActionRejected, match="'parent' is RUNNING"):
            await resolve_step(handle, "child saga", note="x")
        await resolve_step(inner, "room", note="refunded by phone")
        failure = await saga_failure(handle)
    # The child ended COMPENSATED: the parent's step failed cleanly, the sibling undone.
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.state.step("child saga").nested_needs_human == []
    assert "sibling" in did(child, "undo")


async def test_the_imperative_form_waits_for_a_human_too(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[HumanBlockSaga], activities=ACTIVITIES):
        handle = await client.start_workflow(
            HumanBlockSaga.run, run, id=f"block-{run}", task_queue=task_queue
        )
        state = await wait_for(handle, needs_human)
        assert state.needs_human == ["a"] and state.failed_step == "b"
        fixed = Script(run=run, step="a").model_dump()
        assert await retry_step(handle, "a", arg=fixed) == "undo a: compensated"
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert [e.ok for e in JOURNAL[run] if e.kind == "undo"] == [False, True]


async def test_the_handlers_are_registered_without_the_sdks_per_call_work(
    client: Client, task_queue: str
) -> None:
    """Every saga registers its query and the operator Updates at its start; the SDK's
    public registration works out each handler's types at every call, so the engine
    puts definitions built once into the workflow's tables (bench/README.md). Pinned:
    this SDK takes that path, and the definitions say what the handlers take."""
    for definition in _desk._UPDATES:
        assert get_type_hints(definition.fn) == {
            "request": definition.arg_types[0],  # type: ignore[index]
            "return": definition.ret_type,
        }
        assert definition.validator is not None
    async with Worker(client, task_queue=task_queue, workflows=[HandlerTablesInTheSandbox]):
        assert await client.execute_workflow(
            HandlerTablesInTheSandbox.run, id=f"tables-{uuid.uuid4()}", task_queue=task_queue
        )


async def test_an_action_no_worker_answers_is_given_up_on_and_delivered_later(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = refund_refused()
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await start_waiting(client, task_queue, s)
    # No worker polls the saga's queue now: the command says so within --wait.
    began = time.monotonic()
    sent = await asyncio.to_thread(
        cli, env, "resolve", handle.id, "b", "--note", "refunded by phone", "--wait", "2"
    )
    assert time.monotonic() - began < 30
    assert sent.returncode == 1 and sent.stderr.count("\n") == 1, sent.stderr
    assert f"{handle.id}: no worker answered within 2 s" in sent.stderr
    # The action was not withdrawn: once a worker runs the saga, it is applied.
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert [(a.action, a.note) for a in failure.state.actions] == [("resolve", "refunded by phone")]
