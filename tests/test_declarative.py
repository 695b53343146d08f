"""Declarative sagas: a SagaSpec as data, run by the generic DeclarativeSaga workflow."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from temporal_saga import SagaFailed, SagaResult, SagaStatus
from temporal_saga.declarative import DeclarativeSaga

from .conftest import WorkerFactory, temporal_cli
from .helpers import active, held, start_from_the_cli, wait_for
from .scripted import JOURNAL, do_step, undo_step

ROOT = Path(__file__).resolve().parent.parent


def script(run: str, step: str, **behaviour: Any) -> dict[str, Any]:
    return {"run": run, "step": step, **behaviour}


async def start(client: Client, queue: str, spec: dict[str, Any]) -> Any:
    return await client.start_workflow(
        "DeclarativeSaga", spec, id=f"declarative-{uuid.uuid4()}", task_queue=queue
    )


async def test_spec_runs_steps_in_dependency_order_and_compensates(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    spec = {
        "name": "from json",
        "options": {"maximum_attempts": 2, "initial_interval_seconds": 0.1},
        "steps": [
            {
                "name": "a",
                "activity": "do_step",
                "arg": script(run, "a"),
                "compensate": "undo_step",
            },
            {
                "name": "b",
                "activity": "do_step",
                "arg": script(run, "b"),
                "after": ["a"],
                "compensate": "undo_step",
                "compensate_arg": script(run, "b-undone-differently"),
            },
            {
                "name": "c",
                "activity": "do_step",
                "arg": script(run, "c", always_retryable_failure=True),
                "after": ["b"],
            },
        ],
    }
    async with worker(workflows=[DeclarativeSaga], activities=[do_step, undo_step]):
        handle = await start(client, task_queue, spec)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "c"
    assert failure.state.status is SagaStatus.COMPENSATED
    journal = [(e.kind, e.step, e.attempt) for e in JOURNAL[run]]
    assert journal == [
        ("do", "a", 1),
        ("do", "b", 1),
        ("do", "c", 1),
        ("do", "c", 2),  # the spec's maximum_attempts
        ("undo", "b-undone-differently", 1),
        ("undo", "a", 1),
    ]


async def test_spec_success_returns_every_result(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    spec = {
        "name": "ok",
        "steps": [{"name": n, "activity": "do_step", "arg": script(run, n)} for n in "xyz"],
    }
    async with worker(workflows=[DeclarativeSaga], activities=[do_step, undo_step]):
        handle = await start(client, task_queue, spec)
        result = await handle.result()
    assert SagaResult.model_validate(result).results == {"x": "do x", "y": "do y", "z": "do z"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "s", "steps": [{"name": "a"}]}, "steps.0.step.activity"),
        ({"name": "s", "steps": []}, "steps"),
        (
            {"name": "s", "steps": [{"name": "a", "activity": "x", "retries": 3}]},
            "steps.0.step.retries",
        ),
        (
            {
                "name": "s",
                "steps": [{"name": "a", "activity": "x", "options": {"maximum_attempts": -1}}],
            },
            "steps.0.step.options.maximum_attempts",
        ),
        (
            {
                "name": "s",
                "steps": [
                    {"name": "a", "activity": "do_step", "after": ["b"]},
                    {"name": "b", "activity": "do_step", "after": ["a"]},
                ],
            },
            "dependency cycle",
        ),
    ],
)
async def test_invalid_spec_fails_at_once_naming_the_problem(
    client: Client, task_queue: str, worker: WorkerFactory, spec: dict[str, Any], message: str
) -> None:
    async with worker(workflows=[DeclarativeSaga], activities=[do_step, undo_step]):
        handle = await start(client, task_queue, spec)
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(handle.result(), timeout=10)
    assert message in str(caught.value.cause)


async def test_unknown_activity_name_fails_the_step_within_seconds(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    spec = {"name": "s", "steps": [{"name": "a", "activity": "no_such_activity"}]}
    async with worker(workflows=[DeclarativeSaga], activities=[do_step, undo_step]):
        began = time.monotonic()
        handle = await start(client, task_queue, spec)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert time.monotonic() - began < 10
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    assert "no_such_activity" in cause.message and "not registered" in cause.message


async def test_trip_spec_started_from_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, trip_worker: str, services: Path
) -> None:
    spec_file = ROOT / "workflows" / "trip_spec.json"
    assert "--input-file workflows/trip_spec.json" in (ROOT / "docs" / "semantics.md").read_text()
    workflow_id = start_from_the_cli(env, trip_worker, spec_file)
    result = await client.get_workflow_handle(workflow_id, result_type=SagaResult).result()
    assert result.results["book hotel room"]["city"] == "Rome"
    assert active(services, "Ana") == held(airline=1, hotel=1, attractions=1)


async def test_a_spec_conditions_steps_on_earlier_results(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    """do_step returns "do <step>": one condition holds, one does not, one fails."""
    run = str(uuid.uuid4())

    def step(name: str, when: dict[str, Any] | None = None) -> dict[str, Any]:
        made: dict[str, Any] = {"name": name, "activity": "do_step", "arg": script(run, name)}
        if when is not None:
            made |= {"after": [when["step"]], "when": when}
        return made

    spec = {
        "name": "conditional",
        "steps": [
            step("a"),
            step("b", {"step": "a", "equals": "do a"}),
            step("c", {"step": "a", "not_equals": "do a"}),
        ],
    }
    async with worker(workflows=[DeclarativeSaga], activities=[do_step, undo_step]):
        result = SagaResult.model_validate(await (await start(client, task_queue, spec)).result())
        bad = {**spec, "steps": [step("a"), step("b", {"step": "a", "above": 5})]}
        with pytest.raises(WorkflowFailureError) as caught:
            await (await start(client, task_queue, bad)).result()
        unknown = {**spec, "steps": [step("a"), {**step("b"), "when": {"step": "a", "equals": 1}}]}
        with pytest.raises(WorkflowFailureError) as not_after:
            await (await start(client, task_queue, unknown)).result()
        two_tests = {
            **spec,
            "steps": [step("a"), step("b", {"step": "a", "equals": 1, "above": 0})],
        }
        with pytest.raises(WorkflowFailureError) as invalid:
            await (await start(client, task_queue, two_tests)).result()
    assert [s.status.value for s in result.state.steps] == ["SUCCEEDED", "SUCCEEDED", "SKIPPED"]
    assert result.state.step("c").note == "condition not met"
    # "do a" > 5: a TypeError, which fails the step (and the saga), saying so.
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "b"
    assert failure.reason == "could not evaluate its condition: TypeError"
    assert "its condition reads 'a', which must be in its after=" in str(not_after.value.cause)
    assert "exactly one of equals, not_equals, above, below" in str(invalid.value.cause)


async def test_an_event_step_in_a_spec_waits_for_its_event_from_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, trip_worker: str, services: Path, tmp_path: Path
) -> None:
    flight = {
        "passenger": "Ida",
        "passport": "ID1234567",
        "origin": "Lisbon",
        "destination": "Rome",
        "date": "2027-05-01",
    }
    steps: list[dict[str, Any]] = [
        {
            "name": "book plane ticket",
            "activity": "book_flight",
            "arg": flight,
            "compensate": "cancel_flight",
        },
        {
            "name": "manager approved",
            "event": "approval",
            "timeout_seconds": 30,
            "after": ["book plane ticket"],
        },
    ]
    spec_file = tmp_path / "approval.json"
    spec_file.write_text(json.dumps({"name": "approved trip", "steps": steps}))
    workflow_id = start_from_the_cli(env, trip_worker, spec_file)
    handle = client.get_workflow_handle(workflow_id, result_type=SagaResult)
    await wait_for(handle, lambda s: s.step("manager approved").note is not None)
    approved = await asyncio.to_thread(
        temporal_cli,
        env,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        workflow_id,
        "--name",
        "saga_event",
        "--input",
        '{"event": "approval", "data": {"by": "Ines"}}',
    )
    assert approved.returncode == 0, approved.stderr
    assert "taken by step 'manager approved'" in approved.stdout
    result = await handle.result()
    assert result.results["manager approved"] == {"by": "Ines"}
    assert active(services, "Ida")["airline"] == 1
    # No approval in time: the flight is cancelled.
    steps[1]["timeout_seconds"] = 0.5
    spec_file.write_text(json.dumps({"name": "approved trip", "steps": steps}))
    workflow_id = start_from_the_cli(env, trip_worker, spec_file)
    with pytest.raises(WorkflowFailureError) as caught:
        await client.get_workflow_handle(workflow_id).result()
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.reason == "no 'approval' event within 0.5 seconds"
    assert failure.state.step("book plane ticket").status.value == "COMPENSATED"
