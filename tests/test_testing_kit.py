"""The testing kit (temporal_saga.testing) as a user meets it: fakes, environments,
outcomes at each phase of a saga, replay, the pytest plugin and the README's tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from temporal_saga import SagaStatus
from temporal_saga.client import give_up, resolve_step
from temporal_saga.testing import FakeActivity, SagaEnvironment, fake, replay

from .conftest import ROOT, server_address
from .kit_sagas import Booking, KitInput, KitSaga, KitSagaRenamed, NotASaga, book, cancel, pay
from .readme_blocks import marked


def fakes(**pay_behaviour: Any) -> tuple[FakeActivity, FakeActivity, FakeActivity]:
    """Fakes of the kit saga's three activities: bookings succeed, pay as told."""
    return (
        fake(book, returns=lambda booking: f"booked {booking.item}"),
        fake(cancel),
        fake(pay, **pay_behaviour),
    )


async def run_kit(env: SagaEnvironment, inp: KitInput, *doubles: FakeActivity) -> Any:
    async with env.worker(workflows=[KitSaga], fakes=doubles) as worker:
        return await worker.run(KitSaga.run, inp)


def test_the_kit_imports_without_pytest() -> None:
    code = "import sys; sys.modules['pytest'] = None; import temporal_saga.testing"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("target", "options", "error", "words"),
    [
        (lambda: 1, {}, TypeError, "not <function"),
        ("", {}, ValueError, "name is empty"),
        (book, {"fail_times": -1}, ValueError, "fail_times= must be a count"),
        (book, {"fails": 3}, TypeError, "fails= takes the failure's message"),
        (book, {"times_out": "yes"}, ValueError, "times_out= is True, False or a count"),
        (book, {"delay": 5}, TypeError, "delay= must be a timedelta"),
        (book, {"fails": "no", "hangs": True}, ValueError, "fails and hangs each decide"),
        (book, {"hangs": True, "times_out": True}, ValueError, "hangs and times_out=True"),
        (book, {"fails": "no", "returns": "x"}, ValueError, "returns= would never be returned"),
        (book, {"times_out": True, "returns": 1}, ValueError, "times_out=True ends every"),
    ],
)
def test_a_fake_with_bad_options_is_refused_when_made(
    target: Any, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        fake(target, **options)


async def test_a_worker_refuses_two_activities_of_one_name_and_non_activities(
    saga_env: SagaEnvironment,
) -> None:
    with pytest.raises(ValueError, match="two activities named 'book'"):
        async with saga_env.worker(workflows=[KitSaga], fakes=[fake(book), fake(book)]):
            pass
    with pytest.raises(TypeError, match="is not an activity"):
        async with saga_env.worker(workflows=[KitSaga], activities=[print]):
            pass


# --- time skipping --------------------------------------------------------------------


async def test_retries_an_hour_apart_take_milliseconds(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking, undo, payment = fakes(fail_times=2, returns="paid")
    began = time.monotonic()
    outcome = await run_kit(
        saga_time_skipping_env, KitInput(deadline_hours=3), booking, undo, payment
    )
    assert time.monotonic() - began < 10
    assert outcome.status is SagaStatus.SUCCEEDED and outcome.result == "booked"
    assert outcome.succeeded == ["book flight", "book hotel", "pay"] and outcome.undone == []
    assert [(c.attempt, c.outcome) for c in payment.calls] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert payment.steps == ["pay"] and undo.calls == []
    assert outcome.state.ended_at - outcome.state.started_at >= timedelta(hours=2)
    # The fake decoded the real argument type; the flight came first.
    assert [c.arg for c in booking.calls] == [
        Booking(item="flight"),
        Booking(item="hotel", nights=2),
    ]


async def test_a_payment_that_times_out_until_the_deadline_undoes_hotel_then_flight(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking, undo, payment = fakes(times_out=True)
    began = time.monotonic()
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, undo, payment)
    assert time.monotonic() - began < 15  # two 1-second timeouts; two hours skipped
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.reason == "saga timed out after 2 hours"
    assert outcome.undone == ["book hotel", "book flight"]
    assert [c.outcome for c in payment.calls] == ["timed out", "timed out"]
    assert [c.arg.item for c in undo.calls] == ["hotel", "flight"]
    assert all(c.compensation for c in undo.calls)
    assert "pay" in outcome.trace and "saga timed out" in outcome.trace


async def test_a_timeout_the_server_reports_then_a_success(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking, undo, payment = fakes(times_out=1, returns="paid")
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, undo, payment)
    assert outcome.status is SagaStatus.SUCCEEDED
    assert [c.outcome for c in payment.calls] == ["timed out", "succeeded"]
    history = await saga_time_skipping_env.client.get_workflow_handle(
        outcome.workflow_id
    ).fetch_history()
    # The fake returned nothing on its first attempt: the server timed it out and
    # started a second.
    [_] = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt == 2
    ]


# --- each phase of a saga ---------------------------------------------------------------


async def test_failing_before_any_step_took_effect_undoes_nothing(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking = fake(book, fails="no flights today")
    undo, payment = fake(cancel), fake(pay)
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, undo, payment)
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.failed == ["book flight"] and outcome.succeeded == []
    assert outcome.skipped == ["book hotel", "pay"] and outcome.undone == []
    assert outcome.failure is not None and "no flights today" in str(outcome.failure)
    assert payment.calls == [] and undo.calls == []
    assert booking.calls[0].outcome == "failed"


async def test_failing_mid_way_undoes_what_took_effect(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking, undo, payment = fakes(fails="card declined")
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, undo, payment)
    assert outcome.failed == ["pay"] and outcome.reason == "card declined"
    assert outcome.undone == ["book hotel", "book flight"]


async def test_compensation_backoff_skips(saga_time_skipping_env: SagaEnvironment) -> None:
    booking, payment = fake(book, returns="ok"), fake(pay, fails="card declined")
    slow_undo = fake(cancel, fail_times=4)  # backoff 1 s, 2 s, 4 s, 8 s: skipped
    began = time.monotonic()
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, slow_undo, payment)
    assert time.monotonic() - began < 10
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.undone == ["book hotel", "book flight"]
    assert [c.outcome for c in slow_undo.calls[:5]] == ["failed"] * 4 + ["succeeded"]


async def test_a_hopeless_compensation_needs_a_human(saga_env: SagaEnvironment) -> None:
    # On the dev server: the time-skipping test server can lose the answer of an update
    # that ends the workflow ("update ... not found"; sdk-python issue 826).
    hopeless = fake(cancel, fails="the airline refuses refunds")
    doubles = [fake(book, returns="ok"), hopeless, fake(pay, fails="declined")]
    async with saga_env.worker(workflows=[KitSaga], fakes=doubles) as worker:
        handle = await worker.start(KitSaga.run, KitInput())
        # The saga waits for a human: outcome() says so, the workflow stays open.
        outcome = await worker.outcome(handle)
        assert outcome.status is SagaStatus.NEEDS_HUMAN
        assert outcome.needs_human == ["book flight", "book hotel"] and outcome.undone == []
        await resolve_step(handle, "book flight", note="refunded by phone")
        await give_up(handle, note="hotel refund written off")
        outcome = await worker.outcome(handle)
    assert outcome.status is SagaStatus.COMPENSATION_FAILED
    assert outcome.needs_human == ["book hotel"]


async def test_hanging_steps_are_cancelled_and_undone_when_the_saga_is_cancelled(
    saga_env: SagaEnvironment,
) -> None:
    hanging = fake(book, hangs=True)
    doubles = [hanging, fake(cancel), fake(pay)]
    async with saga_env.worker(workflows=[KitSaga], fakes=doubles) as worker:
        handle = await worker.start(KitSaga.run, KitInput(parallel=True, deadline_hours=None))
        while True:  # both bookings started, and hang
            pending = (await handle.describe()).raw_description.pending_activities
            if sum(p.HasField("last_started_time") for p in pending) == 2:
                break
            await asyncio.sleep(0.05)
        await handle.cancel()
        outcome = await worker.outcome(handle)
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, CancelledError) and outcome.failure is None
    assert sorted(c.outcome for c in hanging.calls) == ["cancelled", "cancelled"]
    assert sorted(outcome.undone) == ["book flight", "book hotel"]  # uncertain: undone


async def test_a_delay_takes_its_time_then_succeeds(saga_env: SagaEnvironment) -> None:
    booking, undo, payment = fakes(delay=timedelta(seconds=0.5), returns="paid")
    began = time.monotonic()
    outcome = await run_kit(saga_env, KitInput(deadline_hours=None), booking, undo, payment)
    assert time.monotonic() - began >= 0.5
    assert outcome.status is SagaStatus.SUCCEEDED


async def test_the_outcome_of_a_closed_saga_comes_from_its_history(
    saga_env: SagaEnvironment,
) -> None:
    booking, undo, payment = fakes(fails="declined")
    async with saga_env.worker(workflows=[KitSaga], fakes=[booking, undo, payment]) as worker:
        handle = await worker.start(KitSaga.run, KitInput(deadline_hours=None))
        await worker.outcome(handle)
    # No worker any more: the state is rebuilt from the history.
    async with saga_env.worker(workflows=[], activities=[fake("unused")]) as idle:
        outcome = await idle.outcome(handle)
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.undone == ["book hotel", "book flight"]


async def test_a_workflow_that_fails_without_a_saga_raises(saga_env: SagaEnvironment) -> None:
    async with saga_env.worker(workflows=[NotASaga]) as worker:
        with pytest.raises(WorkflowFailureError):
            await worker.run(NotASaga.run)


# --- replay --------------------------------------------------------------------------


async def test_replay_names_the_histories_a_change_would_break(
    saga_env: SagaEnvironment, tmp_path: Path
) -> None:
    booking, undo, payment = fakes(fails="declined")
    async with saga_env.worker(workflows=[KitSaga], fakes=[booking, undo, payment]) as worker:
        outcome = await worker.run(KitSaga.run, KitInput(deadline_hours=None))
    handle = saga_env.client.get_workflow_handle(outcome.workflow_id)
    path = tmp_path / "kit.json"
    path.write_text((await handle.fetch_history()).to_json())

    same = await replay([KitSaga], files=[path])
    assert same.replayed == 1 and same.broken == []
    changed = await replay([KitSagaRenamed], files=[str(path)])
    [broken] = changed.broken
    assert broken.workflow_id == outcome.workflow_id and "reserve a room" in broken.reason
    fetched = await replay(
        [KitSaga], client=saga_env.client, query=f'WorkflowId = "{outcome.workflow_id}"'
    )
    assert fetched.replayed == 1 and fetched.broken == []
    with pytest.raises(ValueError, match="give history files, or a client"):
        await replay([KitSaga])


# --- the pytest plugin and the README's tests -----------------------------------------


def pytest_in(folder: Path, env: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=folder,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),  # the trip example's packages, as from a clone
            "TEMPORAL_TEST_ADDRESS": server_address(env),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_readme_tests_pass_as_pasted_with_the_plugin_enabled_in_one_line(
    env: Any, tmp_path: Path
) -> None:
    for name in (
        "conftest.py",
        "pyproject.toml",
        "shop.py",
        "test_shop.py",
        "test_trip_saga.py",
        "checkout.py",
        "test_checkout.py",
    ):
        (tmp_path / name).write_text(marked(f"file {name}"))
    assert len(marked("file test_shop.py").splitlines()) < 25  # the README's: small
    assert marked("file conftest.py").strip().count("\n") == 0  # one line
    ran = pytest_in(tmp_path, env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "4 passed" in ran.stdout, ran.stdout
    # Without that line nothing of the kit loads: the wheel declares no pytest11 entry
    # point (tests/test_packaging.py).


async def test_per_call_decides_each_call_from_its_argument(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    """The hotel is full (decided by the booking), the flight books; undoing it is
    recorded with the flight's own idempotency key, after the booking ended."""
    booking = fake(
        book,
        returns=lambda b: f"booked {b.item}",
        per_call=lambda b: {"fails": "no rooms"} if b.item == "hotel" else {},
    )
    undo, payment = fake(cancel), fake(pay)
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, undo, payment)
    assert outcome.failed == ["book hotel"] and outcome.reason == "no rooms"
    assert outcome.undone == ["book flight"]
    [flight] = [c for c in booking.calls if c.arg.item == "flight"]
    [hotel] = [c for c in booking.calls if c.arg.item == "hotel"]
    assert (flight.outcome, hotel.outcome) == ("succeeded", "failed")
    [undone] = undo.calls
    assert undone.idempotency_key == flight.idempotency_key != hotel.idempotency_key
    assert flight.started <= flight.ended <= undone.started <= undone.ended


async def test_a_per_call_mistake_fails_that_call_for_good(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    booking = fake(book, per_call=lambda b: {"fails": "full", "hangs": True})
    outcome = await run_kit(saga_time_skipping_env, KitInput(), booking, fake(cancel), fake(pay))
    assert outcome.status is SagaStatus.COMPENSATED
    assert "fails and hangs each decide how every attempt ends" in (outcome.reason or "")
    assert [c.attempt for c in booking.calls] == [1]  # not retried


def test_per_call_must_be_a_function() -> None:
    with pytest.raises(TypeError, match="per_call= takes a function of the argument"):
        fake(book, per_call={"fails": "x"})  # type: ignore[arg-type]
