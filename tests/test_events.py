"""Event steps (DESIGN section 9), on a real server, at every phase of a saga.

An event step succeeds when its event reaches the saga (the ``saga_event`` Update or
Signal), with a deadline. Each rule is tried where it can bite: before the step is due
(kept), while it waits (taken), after it took its event (duplicates, refusals), when
the deadline passes (before and past the pivot), while the saga fails or is cancelled
(uncertain: compensated), after the saga closed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from temporal_saga import (
    Saga,
    SagaDefinitionError,
    SagaFailed,
    SagaState,
    SagaStatus,
    SagaTypeError,
    StepStatus,
)
from temporal_saga.client import (
    ActionRejected,
    data_converter,
    render_trace,
    resolve_step,
    retry_step,
    send_event,
    start_until_step,
    state_from_history,
)
from temporal_saga.testing import FakeActivity, fake

from .conftest import WorkerFactory, temporal_cli
from .event_sagas import ShopBlockSaga, ShopInput, ShopSaga, refund, release, reserve, ship
from .helpers import cli, ends_cancelled, rebuild, wait_for

PAYMENT = {"amount": 120, "reference": "pay-7"}


def fakes(ship_delay: float = 0, **reserve_options: Any) -> dict[str, FakeActivity]:
    return {
        "reserve": fake(reserve, **(reserve_options or {"returns": "reserved"})),
        "release": fake(release),
        "refund": fake(refund),
        "ship": fake(
            ship,
            returns=lambda amount: f"shipped for {amount}",
            delay=timedelta(seconds=ship_delay),
        ),
    }


async def start(
    client: Client, queue: str, inp: ShopInput, workflow_type: Any = ShopSaga
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        workflow_type.run, inp, id=f"shop-{uuid.uuid4()}", task_queue=queue
    )


async def waiting(client: Client, queue: str) -> WorkflowHandle[Any, Any]:
    """A shop saga started, once its payment step waits."""
    handle = await start(client, queue, ShopInput())
    await wait_for(handle, waits_for_payment)
    return handle


def waits_for_payment(state: Any) -> bool:
    # In the imperative form the step exists only once the block's code has added it.
    step = next((s for s in state.steps if s.name == "payment confirmed"), None)
    return (
        step is not None
        and step.outcome is StepStatus.RUNNING
        and step.note == "waiting for event 'payment'"
    )


def calls(activity: FakeActivity) -> list[Any]:
    return [call.arg for call in activity.calls]


async def test_an_event_completes_its_step_and_its_sender_gets_the_answer(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes(ship_delay=1)
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput())
        state = await wait_for(handle, waits_for_payment)
        assert state.step("payment confirmed").event == "payment"
        assert "⏳ payment confirmed (waiting for event 'payment')" in render_trace(state)
        # While it waits: an unknown event and an invalid payload are refused, with why.
        with pytest.raises(ActionRejected, match="waits for no 'parcel' event"):
            await send_event(handle, "parcel", {})
        with pytest.raises(ActionRejected, match="invalid 'payment' event for Payment: amount"):
            await send_event(handle, "payment", {"reference": "pay-7"})
        answer = await send_event(handle, "payment", PAYMENT, id="delivery-1")
        assert answer == "taken by step 'payment confirmed': 'payment'"
        # While the saga ships: the same delivery again counts once; another is refused.
        again = await send_event(handle, "payment", PAYMENT, id="delivery-1")
        assert again == "already received: 'payment' (id 'delivery-1')"
        with pytest.raises(ActionRejected, match="received a 'payment' event already"):
            await send_event(handle, "payment", PAYMENT, id="delivery-2")
        result = await handle.result()
    assert result == {"payment": PAYMENT, "shipped": "shipped for 120"}
    assert calls(f["ship"]) == [120] and calls(f["refund"]) == []
    with pytest.raises(ActionRejected, match="not running"):
        await send_event(handle, "payment", PAYMENT, id="delivery-2")
    rebuilt = await rebuild(client, handle.id)
    assert rebuilt.step("payment confirmed").outcome is StepStatus.SUCCEEDED


async def test_an_event_before_its_step_is_due_is_kept_and_counts_once(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(approval=True))
        await wait_for(handle, lambda s: s.step("approved").outcome is StepStatus.RUNNING)
        kept = await send_event(handle, "payment", PAYMENT, id="delivery-1")
        assert kept == "kept for step 'payment confirmed': 'payment'"
        assert await send_event(handle, "payment", PAYMENT, id="delivery-1") == (
            "already received: 'payment' (id 'delivery-1')"
        )
        with pytest.raises(ActionRejected, match="holds a 'payment' event already"):
            await send_event(handle, "payment", {"amount": 1, "reference": "x"}, id="other")
        state = await handle.query("saga_state", result_type=SagaState)
        assert state.step("payment confirmed").outcome is StepStatus.PENDING
        await send_event(handle, "approval", None)
        assert (await handle.result())["payment"] == PAYMENT
    assert calls(f["ship"]) == [120]


async def test_signals_are_fire_and_forget_and_a_refused_one_is_recorded(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await waiting(client, task_queue)
        assert await send_event(handle, "parcel", {}, answer=False) is None
        state = await wait_for(handle, lambda s: bool(s.actions))
        [refused] = state.actions
        assert refused.action == "event refused"
        assert refused.note is not None and "waits for no 'parcel' event" in refused.note
        await send_event(handle, "payment", PAYMENT, answer=False)
        assert (await handle.result())["shipped"] == "shipped for 120"


async def test_no_event_in_time_fails_the_step_and_undoes_the_saga(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=1))
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    failed = SagaFailed.from_error(caught.value.cause)
    assert failed is not None
    assert failed.reason == "no 'payment' event within 1 second"
    step = failed.state.step("payment confirmed")
    assert step.outcome is StepStatus.FAILED and not step.uncertain
    assert step.compensation is None and calls(f["refund"]) == []  # nothing to undo
    assert calls(f["release"]) == ["lamp"] and calls(f["ship"]) == []
    with pytest.raises(ActionRejected, match="not running"):
        await send_event(handle, "payment", PAYMENT)


@pytest.mark.time_skipping  # the hour-long wait is a timer, skipped
async def test_an_hour_without_the_event_is_skipped_by_the_test_server(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=3600))
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert loop.time() - began < 10
    failed = SagaFailed.from_error(caught.value.cause)
    assert failed is not None and failed.reason == "no 'payment' event within 1 hour"


async def test_a_saga_failing_while_its_step_waits_undoes_the_uncertain_step(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes(fails="out of stock", delay=timedelta(seconds=0.5))
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await waiting(client, task_queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    failed = SagaFailed.from_error(caught.value.cause)
    assert failed is not None and failed.reason == "out of stock"
    step = failed.state.step("payment confirmed")
    assert step.outcome is StepStatus.CANCELLED and step.uncertain
    assert step.status is StepStatus.COMPENSATED
    assert calls(f["refund"]) == ["order-1"]  # no payment came: undone by the order
    assert calls(f["release"]) == []  # the reservation failed: nothing to release


async def test_a_cancel_while_the_step_waits_undoes_it(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await waiting(client, task_queue)
        await handle.cancel()
        await ends_cancelled(handle)
    assert calls(f["refund"]) == ["order-1"] and calls(f["release"]) == ["lamp"]


async def test_a_saga_compensating_refuses_the_event(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    f["release"] = fake(release, hangs=True)  # the undo lasts until cancelled
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=1))
        await wait_for(handle, lambda s: s.status is SagaStatus.COMPENSATING)
        with pytest.raises(ActionRejected, match="is FAILED: it waits for no event"):
            await send_event(handle, "payment", PAYMENT)
        await handle.terminate("test over")


async def test_past_the_pivot_a_missing_event_waits_for_a_human_and_retry_waits_again(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=1, pivot=True))
        state = await wait_for(handle, lambda s: s.status is SagaStatus.NEEDS_HUMAN)
        assert state.needs_human == ["payment confirmed", "ship"]
        with pytest.raises(ActionRejected, match="is FAILED: it waits for no event"):
            await send_event(handle, "payment", PAYMENT)
        retry = asyncio.create_task(retry_step(handle, "payment confirmed"))
        await wait_for(handle, waits_for_payment)
        assert await send_event(handle, "payment", PAYMENT) == (
            "taken by step 'payment confirmed': 'payment'"
        )
        assert await retry == "payment confirmed: succeeded"
        assert (await handle.result())["shipped"] == "shipped for 120"
    state = await rebuild(client, handle.id)
    assert state.status is SagaStatus.SUCCEEDED


async def test_the_imperative_form_keeps_an_event_for_a_step_not_added_yet(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopBlockSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(approval=True), ShopBlockSaga)
        await wait_for(handle, lambda s: any(x.name == "approved" for x in s.steps))
        kept = await send_event(handle, "payment", PAYMENT, id="d-1")
        assert kept == "kept for step to come: 'payment'"
        await send_event(handle, "approval", None)
        assert await handle.result() == {"payment": PAYMENT, "shipped": "shipped for 120"}


async def test_the_imperative_form_undoes_a_step_that_waited_as_the_block_failed(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopBlockSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=1), ShopBlockSaga)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    failed = SagaFailed.from_error(caught.value.cause)
    assert failed is not None and failed.reason == "no 'payment' event within 1 second"
    assert calls(f["release"]) == ["lamp"] and calls(f["refund"]) == []


def test_bad_event_steps_are_refused_where_they_are_declared() -> None:
    saga = Saga("shop")
    hour = timedelta(hours=1)
    with pytest.raises(SagaTypeError, match="timeout= must be a positive timedelta"):
        saga.event("paid", "payment")  # type: ignore[call-overload]
    with pytest.raises(SagaTypeError, match="the event's name must be text"):
        saga.event("paid", "", timeout=hour)
    with pytest.raises(SagaTypeError, match="calls no activity: start_to_close_timeout"):
        saga.event("paid", "payment", timeout=hour, start_to_close_timeout=hour)  # type: ignore[call-overload]
    with pytest.raises(SagaTypeError, match="result_type= takes a type"):
        saga.event("paid", "payment", timeout=hour, result_type="Payment")  # type: ignore[call-overload]
    with pytest.raises(SagaTypeError, match="event\\(\\) takes the name and the event"):
        saga.event("paid", "payment", hour)  # type: ignore[call-overload]
    saga.event("paid", "payment", timeout=hour)
    with pytest.raises(SagaDefinitionError, match="step 'paid' already waits for event"):
        saga.event("paid again", "payment", timeout=hour)
    with pytest.raises(SagaDefinitionError, match="fails when its event does not come"):
        saga.event("x", "other", timeout=hour, compensate_on_failure=True)  # type: ignore[call-overload]


async def test_events_from_the_command_line_and_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(approval=True))
        await wait_for(handle, lambda s: s.step("approved").outcome is StepStatus.RUNNING)
        payment = json.dumps(PAYMENT)
        sent = await asyncio.to_thread(
            cli, env, "event", handle.id, "payment", "--data", payment, "--id", "d-1"
        )
        assert sent.stdout == f"{handle.id}: kept for step 'payment confirmed': 'payment'\n"
        unknown = await asyncio.to_thread(cli, env, "event", handle.id, "parcel")
        assert unknown.returncode == 1 and unknown.stdout == ""
        assert unknown.stderr.startswith(f"temporal-saga: {handle.id}: rejected: saga 'shop'")
        assert "waits for no 'parcel' event (its events: 'approval', 'payment')" in unknown.stderr
        bad = await asyncio.to_thread(cli, env, "event", handle.id, "approval", "--data", "{x")
        assert bad.returncode == 1 and "--data is not JSON" in bad.stderr
        # The temporal CLI's recipe (docs/events.md): a Signal, no answer.
        signalled = await asyncio.to_thread(
            temporal_cli,
            env,
            "workflow",
            "signal",
            "--workflow-id",
            handle.id,
            "--name",
            "saga_event",
            "--input",
            '{"event": "approval", "id": "manager-1"}',
        )
        assert signalled.returncode == 0, signalled.stderr
        assert (await handle.result())["payment"] == PAYMENT


async def rebuilt(name: str) -> SagaState:
    path = Path(__file__).parent / "histories" / f"{name}.json"
    history = WorkflowHistory.from_json(f"history-{name}", path.read_text())
    return await state_from_history(
        history.events, data_converter(from_env=False), workflow_id=history.workflow_id
    )


async def test_event_steps_are_rebuilt_from_history() -> None:
    # Waited, then taken (the approval); kept before it was due, so never waited: the
    # payment leaves no trace of its own (docs/events.md says so).
    taken = await rebuilt("event_kept_then_taken")
    assert taken.status is SagaStatus.SUCCEEDED
    approved = taken.step("approved")
    assert approved.outcome is StepStatus.SUCCEEDED and approved.event == "approval"
    assert [s.name for s in taken.steps] == ["reserve goods", "approved", "ship"]
    # Cancelled while it waited: uncertain, refunded.
    cancelled = await rebuilt("event_cancelled_while_waiting")
    payment = cancelled.step("payment confirmed")
    assert payment.outcome is StepStatus.CANCELLED and payment.uncertain
    assert payment.status is StepStatus.COMPENSATED and payment.event == "payment"
    # Timed out: the failure carries the state; history rebuilds the same step.
    timed_out = await rebuilt("event_timed_out")
    assert timed_out.step("payment confirmed").error == "no 'payment' event within 1 second"
    assert timed_out.status is SagaStatus.COMPENSATED


# --- The early answer (Update-with-Start) ------------------------------------------------


async def test_the_early_answer_comes_once_its_step_succeeded_and_the_saga_goes_on(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga, ShopBlockSaga], activities=list(f.values())):
        workflow_id = f"shop-{uuid.uuid4()}"
        reserved = await start_until_step(
            client,
            ShopSaga.run,
            ShopInput(),
            step="reserve goods",
            id=workflow_id,
            task_queue=task_queue,
        )
        assert reserved == "reserved"
        handle = client.get_workflow_handle(workflow_id)
        await wait_for(handle, waits_for_payment)  # the saga goes on after the answer
        await send_event(handle, "payment", PAYMENT)
        assert (await handle.result())["shipped"] == "shipped for 120"
        # The answer can be the payload of an event step, in the imperative form too.
        block_id = f"shop-{uuid.uuid4()}"
        answering = asyncio.create_task(
            start_until_step(
                client,
                ShopBlockSaga.run,
                ShopInput(),
                step="payment confirmed",
                id=block_id,
                task_queue=task_queue,
            )
        )
        block = client.get_workflow_handle(block_id)
        await wait_for(block, waits_for_payment)
        assert not answering.done()
        await send_event(block, "payment", PAYMENT)
        assert await answering == PAYMENT


async def test_the_early_answer_is_the_failure_when_the_saga_fails_first(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        with pytest.raises(SagaFailed) as caught:
            await start_until_step(
                client,
                ShopSaga.run,
                ShopInput(wait_seconds=1),
                step="ship",
                id=f"shop-{uuid.uuid4()}",
                task_queue=task_queue,
            )
        assert caught.value.reason == "no 'payment' event within 1 second"
        assert caught.value.state.failed_step == "payment confirmed"
        # A step the saga does not have is refused; the saga runs on regardless.
        workflow_id = f"shop-{uuid.uuid4()}"
        with pytest.raises(ActionRejected, match="no saga here has step 'nope'"):
            await start_until_step(
                client,
                ShopSaga.run,
                ShopInput(),
                step="nope",
                id=workflow_id,
                task_queue=task_queue,
            )
        await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_past_the_pivot_an_operator_resolves_a_missing_event_with_its_payload(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    f = fakes()
    async with worker(workflows=[ShopSaga], activities=list(f.values())):
        handle = await start(client, task_queue, ShopInput(wait_seconds=1, pivot=True))
        await wait_for(handle, lambda s: s.status is SagaStatus.NEEDS_HUMAN)
        with pytest.raises(ActionRejected, match="invalid 'payment' event for Payment: amount"):
            await resolve_step(handle, "payment confirmed", note="paid at the desk", result={})
        answer = await resolve_step(
            handle, "payment confirmed", note="paid at the desk", result=PAYMENT
        )
        assert answer == "payment confirmed: resolved by hand"
        # The step after it reads the payload the operator gave.
        assert await handle.result() == {"payment": PAYMENT, "shipped": "shipped for 120"}
    assert calls(f["ship"]) == [120]
