"""Nexus steps (DESIGN section 11) on the dev server: another team's namespace, its
worker behind a Nexus endpoint, the same promises as for activities at every phase.

No mocks: the session's server has a second namespace (``OTHER_TEAM``); each test
makes its own endpoint, routed to a fresh task queue there, served by the team's
worker (``tests/nexus_team.py``), whose bookings are a SQLite file under the barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio import workflow
from temporalio.api.operatorservice.v1 import (
    DeleteNexusEndpointRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.testing import WorkflowEnvironment

from temporal_saga import (
    SagaResult,
    SagaState,
    SagaStatus,
    SagaTypeError,
    StepStatus,
)
from temporal_saga._protocol import SAGA_STATE_QUERY
from temporal_saga.client import SagaPlugin, resolve_step, retry_step, state_from_history
from temporal_saga.declarative import DeclarativeSaga, SagaSpec
from temporal_saga.nexus import NexusOperation

from .conftest import OTHER_TEAM, ROOT, WorkerFactory, make_endpoint, server_address
from .helpers import saga_failure, start_from_the_cli, wait_for

with workflow.unsafe.imports_passed_through():
    from .nexus_team import (
        CALLER_ACTIVITIES,
        Cover,
        Insurance,
        OptionsOnANexusStep,
        Plan,
        Trip,
        TripBlock,
        policies,
        team_worker,
    )


@dataclass
class Team:
    """The other team: its client, its worker's queue, the endpoint to it, its data."""

    client: Client
    queue: str
    endpoint: str
    db: str

    def plan(self, holder: str, **options: Any) -> Plan:
        cover = {k: options.pop(k) for k in list(options) if k in Cover.model_fields}
        return Plan(
            endpoint=self.endpoint, cover=Cover(db=self.db, holder=holder, **cover), **options
        )

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        with ThreadPoolExecutor(4) as executor:
            async with team_worker(self.client, self.queue, executor):
                yield


@pytest.fixture
async def team(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Team]:
    client = await Client.connect(server_address(env), namespace=OTHER_TEAM, plugins=[SagaPlugin()])
    queue, name = f"team-{uuid.uuid4()}", f"team-{uuid.uuid4().hex[:16]}"
    endpoint = await make_endpoint(env.client, name, queue)
    try:
        yield Team(client, queue, name, str(tmp_path / "insurer.db"))
    finally:
        await env.client.operator_service.delete_nexus_endpoint(
            DeleteNexusEndpointRequest(id=endpoint.id, version=endpoint.version)
        )


@contextlib.asynccontextmanager
async def both(worker: WorkerFactory, team: Team) -> AsyncIterator[None]:
    async with worker(workflows=[Trip], activities=CALLER_ACTIVITIES), team.worker():
        yield


async def start(client: Client, task_queue: str, plan: Plan) -> WorkflowHandle[Any, str]:
    return await client.start_workflow(
        Trip.run, plan, id=f"trip-{uuid.uuid4()}", task_queue=task_queue
    )


async def bought_or_cancelled(
    handle: WorkflowHandle[Any, Any], team: Team, charge_fails: bool, result: object
) -> Any:
    """The trip's end: it succeeds (with ``result``, unless None), its policy in force;
    or its charge fails, and its policy is cancelled. Returns its result, if any."""
    if not charge_fails:
        returned = await handle.result()
        assert result is None or returned == result
        assert [s for _, _, s in policies(team.db)] == ["ACTIVE"]
        return returned
    failure = await saga_failure(handle)
    assert failure.state.step("buy insurance").status is StepStatus.COMPENSATED
    assert [s for _, _, s in policies(team.db)] == ["CANCELLED"]
    return None


def step_key(handle: WorkflowHandle[Any, Any], run_id: str, step: str) -> str:
    return f"{handle.id}/{run_id}/trip/{step}"


async def team_workflows(team: Team) -> dict[str, WorkflowExecutionStatus]:
    return {w.id: w.status async for w in team.client.list_workflows()}  # type: ignore[misc]


async def test_a_nexus_step_books_with_the_other_team_which_gets_the_steps_key(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    async with both(worker, team):
        handle = await start(client, task_queue, team.plan("Ana"))
        assert await handle.result() == "policy for Ana"
    run_id = (await handle.describe()).run_id
    # The handler's idempotency_key() is the step's key, as an activity's would be.
    assert policies(team.db) == [("Ana", step_key(handle, run_id, "buy insurance"), "ACTIVE")]
    # The step in the saga's state, and rebuilt from history alone (its Nexus header).
    history = await handle.fetch_history()
    rebuilt = await state_from_history(history.events, client.data_converter)
    assert rebuilt.status is SagaStatus.SUCCEEDED
    assert [(s.name, s.status) for s in rebuilt.steps] == [
        ("book flight", StepStatus.SUCCEEDED),
        ("buy insurance", StepStatus.SUCCEEDED),
        ("charge", StepStatus.SUCCEEDED),
    ]
    # The Web UI shows the step's name on the operation (its summary).
    scheduled = [
        e for e in history.events if e.HasField("nexus_operation_scheduled_event_attributes")
    ]
    assert len(scheduled) == 1 and scheduled[0].user_metadata.HasField("summary")


@pytest.mark.parametrize(
    ("how", "reason"), [("refuse", "no cover for Bo"), ("broken", "no tariff for Bo")]
)
async def test_a_failed_nexus_step_is_not_undone_but_the_steps_before_it_are(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str, how: str, reason: str
) -> None:
    """The operation fails (``OperationError``), or its handler does (a non-retryable
    error): either way the step failed, with the handler's message."""
    async with both(worker, team):
        handle = await start(client, task_queue, team.plan("Bo", **{how: True}))
        failure = await saga_failure(handle)
    assert failure.failed_step == "buy insurance" and failure.reason == reason
    insurance = failure.state.step("buy insurance")
    assert insurance.status is StepStatus.FAILED and not insurance.uncertain
    assert insurance.compensation is None  # failed cleanly: nothing to undo
    assert failure.state.step("book flight").status is StepStatus.COMPENSATED
    assert policies(team.db) == []


@pytest.mark.parametrize("undo_by", ["nexus", "activity"])
async def test_a_later_failure_cancels_the_insurance_with_the_same_key(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str, undo_by: str
) -> None:
    """The compensation is a Nexus operation of the team's, or the caller's own
    activity: either way it finds the booking by the step's key."""
    async with both(worker, team):
        handle = await start(
            client, task_queue, team.plan("Cy", charge_fails=True, undo_by=undo_by)
        )
        failure = await saga_failure(handle)
    assert failure.failed_step == "charge" and failure.reason == "card declined"
    insurance = failure.state.step("buy insurance")
    assert insurance.status is StepStatus.COMPENSATED
    [(holder, _, status)] = policies(team.db)
    assert (holder, status) == ("Cy", "CANCELLED")
    history = await handle.fetch_history()
    rebuilt = await state_from_history(history.events, client.data_converter)
    assert rebuilt.step("buy insurance").status is StepStatus.COMPENSATED


async def test_an_operation_that_times_out_is_cancelled_through_nexus_then_compensated(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    """The workflow behind the operation would take 30 s; the step's timeout is 1 s:
    the saga cancels the operation (its workflow ends CANCELED), then compensates."""
    plan = team.plan("Di", operation="underwrite", seconds=30, timeout_seconds=1)
    async with both(worker, team):
        failure = await saga_failure(await start(client, task_queue, plan))
    insurance = failure.state.step("buy insurance")
    assert failure.failed_step == "buy insurance"
    assert insurance.error == "timed out (SCHEDULE_TO_CLOSE)" and insurance.uncertain
    assert insurance.status is StepStatus.COMPENSATED
    statuses = set((await team_workflows(team)).values())
    assert statuses == {WorkflowExecutionStatus.CANCELED}


async def test_cancelling_the_saga_cancels_the_running_operation_then_compensates(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    plan = team.plan("Ed", operation="underwrite", seconds=30)
    async with both(worker, team):
        handle = await start(client, task_queue, plan)
        await wait_for(handle, lambda s: s.step("buy insurance").status is StepStatus.RUNNING)
        while not await team_workflows(team):
            await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert set((await team_workflows(team)).values()) == {WorkflowExecutionStatus.CANCELED}
    history = await handle.fetch_history()
    state = await state_from_history(history.events, client.data_converter)
    insurance = state.step("buy insurance")
    assert insurance.status is StepStatus.COMPENSATED and insurance.uncertain
    assert state.step("book flight").status is StepStatus.COMPENSATED


async def test_a_saga_failing_while_the_operation_runs_cancels_it_then_compensates(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    """The visa check fails while the workflow-backed operation runs; the saga cancels
    what is in flight: the operation, through Nexus (its workflow ends CANCELED),
    then compensates it, its outcome unknown."""
    plan = team.plan("Kai", operation="underwrite", seconds=30, visa_refused=True)
    async with both(worker, team):
        failure = await saga_failure(await start(client, task_queue, plan))
    assert failure.failed_step == "check visa" and failure.reason == "visa refused"
    insurance = failure.state.step("buy insurance")
    assert insurance.status is StepStatus.COMPENSATED and insurance.uncertain
    assert set((await team_workflows(team)).values()) == {WorkflowExecutionStatus.CANCELED}


@pytest.mark.parametrize("charge_fails", [False, True])
async def test_the_imperative_form_takes_nexus_steps_too(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str, charge_fails: bool
) -> None:
    plan = team.plan("Lou", charge_fails=charge_fails)
    async with worker(workflows=[TripBlock], activities=CALLER_ACTIVITIES), team.worker():
        handle = await client.start_workflow(
            TripBlock.run, plan, id=f"trip-{uuid.uuid4()}", task_queue=task_queue
        )
        await bought_or_cancelled(handle, team, charge_fails, "policy for Lou")


async def test_a_nexus_compensation_that_fails_for_good_waits_for_a_human(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    plan = team.plan("Flo", charge_fails=True, undo_fails=True)
    async with both(worker, team):
        handle = await start(client, task_queue, plan)
        state = await wait_for(handle, lambda s: s.status is SagaStatus.NEEDS_HUMAN)
        insurance = state.step("buy insurance")
        assert insurance.compensation is not None
        assert insurance.compensation.error == "the insurer's desk is closed"
        answer = await retry_step(
            handle, "buy insurance", arg=plan.cover.model_copy(update={"undo_fails": False})
        )
        assert "compensated" in answer, answer
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    [(_, _, status)] = policies(team.db)
    assert status == "CANCELLED"


async def test_a_cancel_while_the_nexus_compensation_runs_lets_it_finish(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    plan = team.plan("Fay", charge_fails=True, undo_seconds=1.5)
    async with both(worker, team):
        handle = await start(client, task_queue, plan)
        await wait_for(handle, lambda s: s.status is SagaStatus.COMPENSATING)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert state.status is SagaStatus.COMPENSATED
    assert state.step("buy insurance").status is StepStatus.COMPENSATED
    assert [s for _, _, s in policies(team.db)] == ["CANCELLED"]


@pytest.mark.parametrize("fail_nested", [False, True])
async def test_a_saga_run_by_the_other_team_is_a_nested_saga(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str, fail_nested: bool
) -> None:
    """Behind ``nested``, a saga in the team's namespace: it succeeds, or its second
    step fails, it undoes its first, and the caller's step fails with its reason."""
    plan = team.plan("Gil", operation="nested", fail_nested=fail_nested)
    async with both(worker, team):
        handle = await start(client, task_queue, plan)
        if not fail_nested:
            assert await handle.result() == "nested policy for Gil"
            assert [s for _, _, s in policies(team.db)] == ["ACTIVE", "ACTIVE"]
            return
        failure = await saga_failure(handle)
    assert failure.failed_step == "buy insurance"
    assert failure.reason == "issue: the underwriter said no"
    assert not failure.state.step("buy insurance").uncertain  # it undid itself
    assert failure.state.step("book flight").status is StepStatus.COMPENSATED
    assert [s for _, _, s in policies(team.db)] == ["CANCELLED"]  # the team's "check"


@pytest.mark.parametrize("charge_fails", [False, True])
async def test_a_declarative_saga_names_nexus_steps_and_starts_from_the_temporal_cli(
    env: WorkflowEnvironment,
    client: Client,
    worker: WorkerFactory,
    team: Team,
    task_queue: str,
    tmp_path: Path,
    charge_fails: bool,
) -> None:
    plan = team.plan("Ivy", charge_fails=charge_fails)
    insurer = {"endpoint": team.endpoint, "service": "Insurance"}
    spec = {
        "name": "trip",
        "steps": [
            {"name": "book flight", "activity": "reserve_seat", "arg": plan.model_dump()},
            {
                "name": "buy insurance",
                "nexus": {**insurer, "operation": "buy", "schedule_to_close_seconds": 30},
                "arg": plan.cover.model_dump(),
                "compensate": {**insurer, "operation": "cancel"},
                "after": ["book flight"],
            },
            {
                "name": "charge",
                "activity": "charge",
                "arg": plan.model_dump(),
                "after": ["buy insurance"],
            },
        ],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    async with worker(workflows=[DeclarativeSaga], activities=CALLER_ACTIVITIES), team.worker():
        handle = client.get_workflow_handle(
            start_from_the_cli(env, task_queue, spec_file), result_type=SagaResult
        )
        result = await bought_or_cancelled(handle, team, charge_fails, None)
    assert charge_fails or result.results["buy insurance"] == "policy for Ivy"


async def test_a_saga_behind_the_endpoint_that_could_not_undo_itself_needs_a_human(
    client: Client, worker: WorkerFactory, team: Team, task_queue: str
) -> None:
    """The team's saga fails and cannot undo its first step: the caller's Nexus step
    failed, and the caller waits for a human for it, naming the team's step."""
    plan = team.plan("Jo", operation="nested", fail_nested=True, undo_fails=True)
    async with both(worker, team):
        handle = await start(client, task_queue, plan)
        state = await wait_for(handle, lambda s: s.status is SagaStatus.NEEDS_HUMAN)
        assert state.needs_human == ["buy insurance"]
        assert state.step("buy insurance").nested_needs_human == ["check"]
        assert state.step("book flight").status is StepStatus.COMPENSATED
        await resolve_step(handle, "buy insurance", note="the insurer's desk cancelled it")
        failure = await saga_failure(handle)
    assert failure.state.status is SagaStatus.COMPENSATED
    assert [s for _, _, s in policies(team.db)] == ["ACTIVE"]  # for the insurer's desk


def test_a_declarative_nexus_step_names_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match=r"steps\.0\.nexus\.nexus\.operation"):
        SagaSpec.model_validate(
            {"name": "s", "steps": [{"name": "a", "nexus": {"endpoint": "e", "service": "S"}}]}
        )


def test_a_nexus_operation_is_checked_when_made() -> None:
    with pytest.raises(SagaTypeError, match="the endpoint is a non-empty name"):
        NexusOperation("", Insurance, "buy")
    with pytest.raises(SagaTypeError, match="with a service's name, name the operation too"):
        NexusOperation("insurer", "Insurance", Insurance.buy)
    with pytest.raises(SagaTypeError, match="positive timedelta"):
        NexusOperation("insurer", Insurance, "buy", schedule_to_close_timeout=timedelta(0))
    assert NexusOperation("insurer", Insurance, Insurance.buy).shown == "insurer/Insurance.buy"


async def test_a_nexus_step_refuses_activity_options(
    client: Client, worker: WorkerFactory, task_queue: str
) -> None:
    async with worker(workflows=[OptionsOnANexusStep]):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                OptionsOnANexusStep.run, id=f"bad-{uuid.uuid4()}", task_queue=task_queue
            )
    cause = caught.value.cause
    assert isinstance(cause, Exception) and "a Nexus step takes no activity options" in str(cause)
    assert "start_to_close_timeout" in str(cause)


# --- The team's worker killed mid-operation ---------------------------------------------


@contextlib.contextmanager
def team_worker_process(
    env: WorkflowEnvironment, team: Team, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.nexus_team_worker", OTHER_TEAM, team.queue],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": server_address(env)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait()


async def test_the_team_worker_killed_mid_operation_books_once(
    env: WorkflowEnvironment,
    client: Client,
    worker: WorkerFactory,
    team: Team,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """The team's worker commits the policy, then is SIGKILLed before answering;
    Nexus retries the operation on the team's next worker, whose barrier answers with
    the recorded policy: booked once, and the saga goes on."""
    committed = tmp_path / "committed"
    plan = team.plan("Hal", stall_after_commit=str(committed))
    async with worker(workflows=[Trip], activities=CALLER_ACTIVITIES):
        with team_worker_process(env, team, tmp_path / "first.log") as first:
            handle = await start(client, task_queue, plan)
            while not committed.exists():
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGKILL)
        with team_worker_process(env, team, tmp_path / "second.log"):
            assert await asyncio.wait_for(handle.result(), timeout=90) == "policy for Hal"
    assert [s for _, _, s in policies(team.db)] == ["ACTIVE"]  # once
