"""The bad-input catalogue: every bad input gets its specific, readable error, quickly.

Library definition errors (raised before anything is scheduled), then bad input that
reaches a server, the example, and the command lines. Nothing hangs, nothing is left
half-booked, and no traceback is printed where a message belongs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from temporal_saga import Saga, SagaDefinitionError, SagaFailed, SagaTypeError

from .conftest import ROOT, WorkerFactory, server_address, temporal_cli
from .helpers import ACTIVITIES, WORKFLOWS, did, fail_saga, spec
from .scripted import JOURNAL, BrokenArgumentSaga, ScriptedStep, do_step, undo_step


def not_an_activity(x: str) -> str:
    return x


def test_definition_error_is_a_value_error_and_fails_a_workflow() -> None:
    err = SagaDefinitionError("x")
    assert isinstance(err, ValueError) and isinstance(err, ApplicationError)
    assert err.non_retryable


def test_duplicate_step_name() -> None:
    saga = Saga("s")
    saga.step("a", do_step)
    with pytest.raises(ValueError, match="'a': a step with this name already exists"):
        saga.step("a", do_step)


def test_step_of_another_saga() -> None:
    other = Saga("other").step("a", do_step)
    with pytest.raises(ValueError, match="another saga"):
        Saga("s").step("b", do_step, after=[other])


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"a": ["ghost"]}, "depends on unknown step 'ghost'"),
        ({"a": ["a"]}, "depends on itself"),
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "dependency cycle"),
    ],
)
async def test_bad_dependencies_are_rejected_before_anything_runs(
    graph: dict[str, list[str]], message: str
) -> None:
    saga = Saga("s")
    for name, after in graph.items():
        saga.step(name, do_step, after=after)
    # run() raises before touching any workflow API, so this works outside a workflow.
    with pytest.raises(ValueError, match=message):
        await saga.run()


async def test_empty_saga() -> None:
    with pytest.raises(ValueError, match="has no steps"):
        await Saga("s").run()


def test_non_activity_step_and_compensation() -> None:
    saga = Saga("s")
    with pytest.raises(TypeError, match=r"not an activity; decorate it with @activity\.defn"):
        saga.step("a", not_an_activity)
    with pytest.raises(TypeError, match="compensate"):
        saga.step("b", do_step, compensate=not_an_activity)
    with pytest.raises(TypeError, match="expected an activity"):
        saga.step("c", 42)  # type: ignore[call-overload]


def test_dynamic_activity_cannot_be_a_step() -> None:
    @activity.defn(dynamic=True)
    async def anything(args: Sequence[RawValue]) -> None: ...

    with pytest.raises(TypeError, match="dynamic activity"):
        Saga("s").step("a", anything)


def test_unknown_and_mistyped_activity_options() -> None:
    with pytest.raises(ValueError, match="unknown activity option 'start_to_close'"):
        Saga("s").step("a", do_step, start_to_close=timedelta(seconds=1))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="'start_to_close_timeout' must be a timedelta, not int"):
        Saga("s", start_to_close_timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown activity option 'retries'"):
        Saga("s", compensation_options={"retries": 3})  # type: ignore[typeddict-unknown-key]


def test_compensation_settings_need_a_compensation() -> None:
    with pytest.raises(ValueError, match="without compensate="):
        Saga("s").step("a", do_step, compensate_arg="x")


def test_bad_saga_settings() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        Saga("")
    with pytest.raises(ValueError, match="positive timedelta"):
        Saga("s", timeout=timedelta(0))


def test_result_before_success_is_an_error() -> None:
    step = Saga("s").step("a", do_step, compensate=undo_step)
    with pytest.raises(RuntimeError, match=r"'a' has no result \(it is PENDING\)"):
        _ = step.result


def test_bad_max_parallelism() -> None:
    with pytest.raises(ValueError, match="max_parallelism must be from 1 to 2000"):
        Saga("s", max_parallelism=0)


def test_a_saga_runs_once_and_takes_no_steps_while_running() -> None:
    saga = Saga("s")
    saga.step("a", do_step)
    saga._definition.started = True  # as run() leaves it
    with pytest.raises(ValueError, match="cannot add a step once it runs"):
        saga.step("b", do_step)


async def test_result_larger_than_the_payload_limit_fails_the_step_and_compensates(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(
        ScriptedStep(name="a"),
        ScriptedStep(name="huge", sleep=0.2, result_bytes=3 * 1024 * 1024, max_attempts=1),
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        began = time.monotonic()
        failure = await fail_saga(client, task_queue, s)
        assert time.monotonic() - began < 60
    assert failure.failed_step == "huge"
    assert "size" in failure.reason.lower() or "limit" in failure.reason.lower(), failure.reason
    assert did(s, "undo") == {"a"}  # nothing half-done


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


async def test_malformed_json_to_the_temporal_cli_starts_nothing(
    env: WorkflowEnvironment, client: Client
) -> None:
    workflow_id = f"malformed-{uuid.uuid4()}"
    started = await asyncio.to_thread(
        temporal_cli,
        env,
        "workflow",
        "start",
        "--type",
        "BuyTripPackage",
        "--task-queue",
        "trip-saga",
        "--workflow-id",
        workflow_id,
        "--input",
        '{"traveller": "Maria", ',
    )
    assert started.returncode != 0
    assert "json" in started.stderr.lower() or "input" in started.stderr.lower(), started.stderr
    with pytest.raises(RPCError):
        await client.get_workflow_handle(workflow_id).describe()


async def test_starter_rejects_an_invalid_trip_in_one_line(env: WorkflowEnvironment) -> None:
    result = await asyncio.to_thread(
        run_cli,
        sys.executable,
        "starter.py",
        "--traveller",
        "Maria",
        "--passport",
        "YA1234567",
        "--nights",
        "0",
        TEMPORAL_ADDRESS=server_address(env),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("starter: ") and "nights" in result.stderr
    assert "Traceback" not in result.stderr


async def test_worker_with_an_unreachable_server_says_so_in_one_line() -> None:
    result = await asyncio.to_thread(
        run_cli, sys.executable, "worker.py", TEMPORAL_ADDRESS="127.0.0.1:1"
    )
    assert result.returncode == 1
    assert "worker failed:" in result.stderr and "Traceback" not in result.stderr


async def test_an_argument_that_cannot_be_built_fails_its_step_and_compensates(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[BrokenArgumentSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                BrokenArgumentSaga.run, run, id=f"broken-{run}", task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "b"
    assert failure.reason == "could not build its argument: KeyError"
    assert {e.step for e in JOURNAL[run] if e.kind == "undo"} == {"a"}


def test_calls_with_the_wrong_arguments_are_refused_as_saga_type_errors() -> None:
    """Inside a workflow a plain TypeError would retry its task forever; these fail it."""
    with pytest.raises(SagaTypeError, match=r"saga 's': Saga\(\) takes its name alone"):
        Saga("s", 5)  # type: ignore[misc]
    saga = Saga("s")
    with pytest.raises(SagaTypeError, match="step 'a': step\\(\\) needs the activity"):
        saga.step("a")  # type: ignore[call-overload]
    with pytest.raises(SagaTypeError, match="step 'a': step\\(\\) takes the name, the activity"):
        saga.step("a", do_step, None, undo_step)  # type: ignore[call-overload]
    with pytest.raises(SagaDefinitionError, match="unknown activity option 'compensat'"):
        saga.step("a", do_step, compensat=undo_step)  # type: ignore[call-overload]
