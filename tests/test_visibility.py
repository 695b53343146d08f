"""Visibility: state query, trace from history, `python -m temporal_saga`, SagaStatus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_saga import (
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
    _publisher,
)
from temporal_saga._protocol import SAGA_STATE_QUERY
from temporal_saga._state import CompensationState
from temporal_saga.client import (
    SagaPlugin,
    data_converter,
    load_state,
    render_trace,
    state_from_history,
)
from temporal_saga.client._cli import COMPENSATED, NEEDS_HUMAN
from temporal_saga.client._graph import render_graph

from .conftest import ROOT, WorkerFactory, server_address, temporal_cli
from .helpers import ACTIVITIES, WORKFLOWS, cli, did, fail_saga, run_saga, spec
from .scripted import (
    HandWrittenParallel,
    MisusedSaga,
    OwnDetailsSaga,
    ScriptedSaga,
    ScriptedStep,
)


async def history_trace(client: Client, workflow_id: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return render_trace(await state_from_history(history.events, client.data_converter))


async def query_state(client: Client, workflow_id: str) -> SagaState:
    handle = client.get_workflow_handle(workflow_id)
    return await handle.query(SAGA_STATE_QUERY, result_type=SagaState)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([ScriptedStep(name="a"), ScriptedStep(name="b", sleep=0.2)], id="success"),
        pytest.param(
            [
                ScriptedStep(name="a", sleep=0.3),
                ScriptedStep(name="b", fail="no rooms"),
                ScriptedStep(name="c", sleep=0.1, start_to_close=0.5, max_attempts=1),
            ],
            id="failure",
        ),
        pytest.param(
            [
                ScriptedStep(name="a", undo_fail="cannot cancel"),
                ScriptedStep(name="b", sleep=0.2, fail="boom"),
            ],
            id="compensation-failure",
        ),
    ],
)
@pytest.mark.parametrize("rendered", ["when read", "at every change"])
async def test_history_alone_rebuilds_the_same_trace(
    client: Client,
    task_queue: str,
    worker: WorkerFactory,
    steps: list[ScriptedStep],
    rendered: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if rendered == "at every change":  # an SDK that lets the trace be rendered only when set
        monkeypatch.setattr(_publisher, "show_details_from", lambda render: False)
    s = spec(*steps)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        with contextlib.suppress(WorkflowFailureError):
            await run_saga(client, task_queue, s)
        live = await query_state(client, f"saga-{s.run}")
        metadata = await client.get_workflow_handle(f"saga-{s.run}").query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
    assert await history_trace(client, f"saga-{s.run}") == render_trace(live)
    # The live trace that the engine keeps up to date line by line says the same.
    assert metadata.current_details == render_trace(live)


async def test_details_the_workflow_sets_itself_win_over_the_trace(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"))
    async with worker(workflows=[OwnDetailsSaga], activities=ACTIVITIES):
        await client.execute_workflow(
            OwnDetailsSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
        )
        metadata = await client.get_workflow_handle(f"saga-{s.run}").query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
    assert metadata.current_details == "booked by hand-written code"


async def test_history_rebuild_of_a_cancelled_saga(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="slow", sleep=30, heartbeat_timeout=1))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await client.start_workflow(
            ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
        )
        while "a" not in did(s, "do"):
            await asyncio.sleep(0.1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        live = await query_state(client, handle.id)
    rebuilt = await history_trace(client, handle.id)
    assert rebuilt == render_trace(live)
    assert "❗️ saga cancelled: reverting" in rebuilt


async def test_show_prints_the_trace_from_the_query_then_from_history(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b", fail="no available hotel rooms"))
    expected = (
        "❗️ begin saga\n\n✔️ a\n❌ b (no available hotel rooms)\n\n"
        "❗️ step failed: reverting\n\n✔️ undo a\n\n❌ end saga (no available hotel rooms)\n"
    )
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
        shown = await asyncio.to_thread(cli, env, "show", f"saga-{s.run}")
        as_json = await asyncio.to_thread(cli, env, "show", f"saga-{s.run}", "--output", "json")
    assert shown.returncode == COMPENSATED, shown.stderr  # exit 3: failed, all undone
    run_id = (await client.get_workflow_handle(f"saga-{s.run}").describe()).run_id
    link = f"https://ui.example:9443/namespaces/default/workflows/saga-{s.run}/{run_id}"
    assert shown.stdout == f"{expected}\nWeb UI: {link}\n"
    assert as_json.returncode == COMPENSATED, as_json.stderr
    state = SagaState.model_validate_json(as_json.stdout)
    assert state.status is SagaStatus.COMPENSATED and state.failed_step == "b"
    assert state.step("a").compensation is not None
    assert state.step("a").compensation.status is StepStatus.SUCCEEDED
    # No worker runs any more: the trace comes from the history alone.
    shown = await asyncio.to_thread(cli, env, "show", f"saga-{s.run}")
    assert shown.returncode == COMPENSATED, shown.stderr
    assert shown.stdout.startswith(expected)
    assert "rebuilt from the workflow's history" in shown.stdout
    as_json = await asyncio.to_thread(cli, env, "show", f"saga-{s.run}", "-o", "json")
    assert SagaState.model_validate_json(as_json.stdout).status is SagaStatus.COMPENSATED


async def test_show_follow_prints_lines_as_the_saga_unfolds(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a", sleep=2), ScriptedStep(name="b", sleep=3))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await client.start_workflow(ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue)
        shown = await asyncio.to_thread(cli, env, "show", f"saga-{s.run}", "--follow")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines.index("⏳ b") < lines.index("✔️ a") < lines.index("✔️ b")
    assert "❗️ all steps succeeded\n\n✔️ end saga (success)\n\nWeb UI: https://ui.example" in (
        shown.stdout
    )


async def test_show_errors_are_one_line(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    unknown = await asyncio.to_thread(cli, env, "show", "no-such-workflow")
    assert unknown.returncode == 1
    assert (
        unknown.stderr == "temporal-saga: no workflow 'no-such-workflow' in namespace 'default'\n"
    )

    unreachable = await asyncio.to_thread(cli, env, "show", "x", address="127.0.0.1:1")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("temporal-saga: cannot reach Temporal at 127.0.0.1:1")
    assert unreachable.stderr.count("\n") == 1

    s = spec(ScriptedStep(name="a"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await client.execute_workflow(
            HandWrittenParallel.run, s, id=f"hand-{s.run}", task_queue=task_queue
        )
    no_namespace = await asyncio.to_thread(cli, env, "list", namespace="no-such-namespace")
    assert no_namespace.returncode == 1
    assert no_namespace.stderr.startswith("temporal-saga: cannot list sagas: ")
    assert "no-such-namespace" in no_namespace.stderr
    assert no_namespace.stderr.count("\n") == 1
    assert no_namespace.stdout == ""  # no table header above the error

    not_saga = await asyncio.to_thread(cli, env, "show", f"hand-{s.run}")
    assert not_saga.returncode == 1
    assert not_saga.stderr.startswith(f"temporal-saga: workflow 'hand-{s.run}' is not a saga")
    assert not_saga.stderr.count("\n") == 1


async def test_an_unregistered_sagastatus_fails_the_saga_at_once_saying_so(
    env: WorkflowEnvironment,
) -> None:
    """Not a workflow task retried forever: the saga fails before any step, clearly."""
    namespace = f"no-saga-status-{uuid.uuid4().hex[:8]}"
    await env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    address = server_address(env)
    client = await Client.connect(
        address, namespace=namespace, data_converter=data_converter(), plugins=[SagaPlugin()]
    )
    s = spec(ScriptedStep(name="a"), search_attributes=True)
    queue = f"q-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES):
        for _ in range(50):  # a new namespace takes a moment to reach every service
            try:
                handle = await client.start_workflow(
                    ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=queue
                )
                break
            except RPCError:
                await asyncio.sleep(0.2)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=30)
    assert isinstance(failed.value.cause, ApplicationError), repr(failed.value.cause)
    assert failed.value.cause.type == "SagaDefinitionError", (
        failed.value.cause.type,
        failed.value.cause.message,
        repr(failed.value.cause.cause),
    )
    message = failed.value.cause.message
    assert "the SagaStatus search attribute is not registered on namespace" in message
    assert "temporal operator search-attribute create --name SagaStatus" in message
    assert did(s, "do") == set()  # before any step


async def test_a_worker_without_the_plugin_is_told_so_not_left_hanging(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    bare = await Client.connect(server_address(env), data_converter=data_converter())
    s = spec(ScriptedStep(name="a"), search_attributes=True)
    async with Worker(bare, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(
                bare.execute_workflow(
                    ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
                ),
                timeout=30,
            )
    assert "needs temporal-saga's plugin on the worker" in str(failed.value.cause)
    assert did(s, "do") == set()


async def test_search_attribute_finds_sagas_that_need_a_human(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    broken = spec(
        ScriptedStep(name="a", undo_fail="cannot cancel"),
        ScriptedStep(name="b", sleep=0.2, fail="boom"),
        search_attributes=True,
    )
    fine = spec(ScriptedStep(name="a"), search_attributes=True)
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, broken)
        await run_saga(client, task_queue, fine)

    query = f'SagaStatus="COMPENSATION_FAILED" AND TaskQueue="{task_queue}"'
    for _ in range(50):  # visibility is eventually consistent
        found = [w.id async for w in client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [f"saga-{broken.run}"]

    listed = await asyncio.to_thread(cli, env, "list", "--status", "COMPENSATION_FAILED")
    assert listed.returncode == 0, listed.stderr
    assert f"saga-{broken.run}" in listed.stdout and f"saga-{fine.run}" not in listed.stdout
    listed = await asyncio.to_thread(cli, env, "list", "--output", "json", "--limit", "500")
    rows = {row["workflow_id"]: row for row in json.loads(listed.stdout)}
    assert rows[f"saga-{broken.run}"]["saga_status"] == "COMPENSATION_FAILED"
    assert rows[f"saga-{fine.run}"]["saga_status"] == "SUCCEEDED"
    assert rows[f"saga-{fine.run}"]["workflow_status"] == "COMPLETED"
    # Scripts tell the outcomes apart by exit code: 4 needs a human, 0 succeeded.
    shown = await asyncio.to_thread(cli, env, "show", f"saga-{broken.run}")
    assert shown.returncode == NEEDS_HUMAN and "manual intervention" in shown.stdout
    shown = await asyncio.to_thread(cli, env, "show", f"saga-{fine.run}")
    assert shown.returncode == 0, shown.stderr

    temporal = await asyncio.to_thread(temporal_cli, env, "workflow", "list", "--query", query)
    assert f"saga-{broken.run}" in temporal.stdout, temporal.stderr

    async def upserts(workflow_id: str) -> int:
        handle = client.get_workflow_handle(workflow_id)
        found = [
            e.upsert_workflow_search_attributes_event_attributes.search_attributes
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        ]
        return sum("SagaStatus" in attributes.indexed_fields for attributes in found)

    assert await upserts(f"saga-{fine.run}") == 2  # RUNNING, SUCCEEDED
    assert await upserts(f"saga-{broken.run}") == 3  # RUNNING, COMPENSATING, final


async def test_load_state_needs_no_worker(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    s = spec(ScriptedStep(name="a"), ScriptedStep(name="b", fail="boom"))
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
        state, source = await load_state(client.get_workflow_handle(f"saga-{s.run}"))
        assert source == "query"
    rebuilt, source = await load_state(client.get_workflow_handle(f"saga-{s.run}"))
    assert source == "history" and rebuilt.status is SagaStatus.COMPENSATED
    # The same state, plus the attempts that only history records.
    assert rebuilt.step("a").attempts == 1 and state.step("a").attempts is None
    assert rebuilt.model_copy(update={"steps": state.steps}) == state


async def test_show_says_why_a_saga_failed_before_its_first_step(
    env: WorkflowEnvironment, client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    run = str(uuid.uuid4())
    async with worker(workflows=[MisusedSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(
                MisusedSaga.run,
                args=[run, "mistyped option"],
                id=f"misused-{run}",
                task_queue=task_queue,
            )
    shown = await asyncio.to_thread(cli, env, "show", f"misused-{run}")
    assert shown.returncode == 1 and shown.stderr.count("\n") == 1
    assert "no saga step ran: the workflow failed first, SagaTypeError: saga 'misused': " in (
        shown.stderr
    )


def test_the_picture_draws_each_state_the_undo_order_and_the_arrows() -> None:
    """``show --graph``'s drawing of a saga in every state a step can be in."""
    undone = CompensationState(name="refund", status=StepStatus.SUCCEEDED, order=1)
    stuck = CompensationState(name="unship", status=StepStatus.FAILED, order=0, error="lost")
    state = SagaState(
        name="shop",
        status=SagaStatus.NEEDS_HUMAN,
        failed_step="pack",
        reason="no box",
        steps=[
            StepState(name="pay", outcome=StepStatus.SUCCEEDED, compensation=undone),
            StepState(name="ship", outcome=StepStatus.SUCCEEDED, compensation=stuck),
            StepState(name="pack", outcome=StepStatus.FAILED, error="no box", after=["pay"]),
            StepState(name="mail", outcome=StepStatus.SKIPPED, after=["pack", "ship"]),
            StepState(name="bill", outcome=StepStatus.RUNNING, label="send the bill"),
        ],
    )
    svg = render_graph(state, "svg")
    kinds = dict(re.findall(r'<g class="step ([a-z-]+)"><title>([^:<]*):', svg))
    assert kinds == {
        "undone": "pay",
        "needs-human": "ship",
        "failed": "pack",
        "waiting": "mail",
        "running": "send the bill",
    }
    assert "undone, 2nd (refund)" in svg and "undo failed: lost" in svg
    assert "saga shop: NEEDS_HUMAN (pack failed: no box)" in svg
    assert svg.count("marker-end") == 3  # pay → pack, pack → mail, ship → mail
    mermaid = render_graph(state, "mermaid")
    assert {"  s0 --> s2", "  s2 --> s3", "  s1 --> s3"} <= set(mermaid.splitlines())
    assert 's1["⚠ ship<br/>succeeded<br/>undo failed: lost<br/>needs a human"]:::needs_human' in (
        mermaid
    )
    with pytest.raises(ValueError, match="no graph of kind 'png'"):
        render_graph(state, "png")


def test_a_declarative_spec_is_drawn_before_anything_runs(tmp_path: Path) -> None:
    spec = ROOT / "workflows" / "trip_spec.json"
    drawn = cli_offline("show", "--spec", str(spec), "--graph", "mermaid")
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("---\ntitle: saga buy trip package: not started\n---\n")
    assert drawn.stdout.count(":::waiting") == 3 and "  s0 --> s2" in drawn.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"name": "x", "steps": [{"name": "a", "activity": "b", "after": ["c"]}]})
    )
    refused = cli_offline("show", "--spec", str(bad), "--graph", "svg")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "step 'a' waits for unknown 'c'" in refused.stderr
    bad.write_text("{}")
    refused = cli_offline("show", "--spec", str(bad), "--graph", "svg")
    assert refused.returncode == 1 and "is not a saga spec: name: Field required" in refused.stderr


def cli_offline(*args: str) -> subprocess.CompletedProcess[str]:
    """The command, where no server answers (a spec needs none)."""
    return subprocess.run(
        [sys.executable, "-m", "temporal_saga", *args],
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
