"""Changing a saga while sagas run: ``since=`` and ``until=``, replayed and live.

Histories recorded with the old definition (``versions.V1``) are replayed against the
changed code, and sagas started on the old code finish on a worker with the new code
(the old worker stopped, as in a deploy), at each phase: before the changed step is
due, after it, while compensating.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_saga import (
    SagaDefinitionError,
    SagaFailed,
    SagaResult,
    SagaStatus,
    SagaTypeError,
    StepStatus,
)
from temporal_saga.client import render_trace, state_from_history
from temporal_saga.declarative import DeclarativeSaga, SagaSpec, StepSpec
from temporal_saga.testing import replay as replay_all

from .conftest import ROOT, server_address
from .versions import (
    ACTIVITIES,
    CALLS,
    INSURE_PATCH,
    RETIRE_NOTIFY_PATCH,
    V1,
    V2,
    V3,
    V4,
    RetiredInBlock,
    V1Relabelled,
    V1Renamed,
    V2Unsafe,
    VersionedInput,
    act,
)


def versioned(**kwargs: Any) -> VersionedInput:
    return VersionedInput(run=str(uuid.uuid4()), **kwargs)


async def start(client: Client, queue: str, inp: VersionedInput) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        "Versioned", inp, id=f"versioned-{inp.run}", task_queue=queue, result_type=SagaResult
    )


async def called(inp: VersionedInput, step: str) -> None:
    """Wait until the step's activity ran at least once."""
    for _ in range(200):
        if step in CALLS[inp.run]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step} never ran: {CALLS[inp.run]}")


async def outcome(handle: WorkflowHandle[Any, Any]) -> Any:
    """The saga's state, whether it succeeded or failed."""
    try:
        return (await handle.result()).state
    except WorkflowFailureError as err:
        failure = SagaFailed.from_error(err)
        assert failure is not None, err
        return failure.state


async def replay(history: WorkflowHistory, workflow: type) -> str | None:
    """Why ``history`` does not replay against ``workflow`` (None: it does)."""
    report = await replay_all([workflow], histories=[history])
    return report.broken[0].reason if report.broken else None


async def deploy(
    client: Client, queue: str, inp: VersionedInput, *, hold: str, new: type
) -> WorkflowHandle[Any, Any]:
    """Start the saga on V1; while ``hold`` (flaky) waits for its retry, swap the worker
    for one with the ``new`` code; return the saga's handle."""
    async with Worker(client, task_queue=queue, workflows=[V1], activities=ACTIVITIES):
        handle = await start(client, queue, inp)
        await called(inp, hold)
    worker = Worker(client, task_queue=queue, workflows=[new], activities=ACTIVITIES)
    task = asyncio.create_task(worker.run())
    try:
        await outcome(handle)
    finally:
        await worker.shutdown()
        await task
    return handle


# --- old histories replayed against the new code -----------------------------------


async def record_v1(client: Client, queue: str) -> dict[str, WorkflowHistory]:
    """V1 histories: succeeded, compensated, and in flight (charge waiting to retry)."""
    succeeded, failed, in_flight = versioned(), versioned(fail="charge"), versioned(flaky="charge")
    async with Worker(client, task_queue=queue, workflows=[V1], activities=ACTIVITIES):
        handles = [await start(client, queue, inp) for inp in (succeeded, failed, in_flight)]
        await outcome(handles[0])
        await outcome(handles[1])
        await called(in_flight, "charge")
        recorded = [await h.fetch_history() for h in handles]
    await handles[2].terminate()
    return dict(zip(("succeeded", "compensated", "in flight"), recorded, strict=True))


async def test_old_histories_replay_against_the_safe_change_and_not_the_unsafe_one(
    client: Client, task_queue: str
) -> None:
    recorded = await record_v1(client, task_queue)
    for phase, history in recorded.items():
        for safe in (V1, V2, V1Relabelled):
            assert await replay(history, safe) is None, (phase, safe)
        for unsafe, named in ((V2Unsafe, "insure"), (V1Renamed, "reserve the room")):
            broken = await replay(history, unsafe)
            assert broken is not None, (phase, unsafe)
            assert "nondetermin" in str(broken).lower() and named in str(broken), broken


async def test_a_label_is_only_shown_the_name_stays_the_identity(
    client: Client, task_queue: str
) -> None:
    inp = versioned(fail="charge")
    async with Worker(
        client, task_queue=task_queue, workflows=[V1Relabelled], activities=ACTIVITIES
    ):
        handle = await start(client, task_queue, inp)
        live = await outcome(handle)
    history = await handle.fetch_history()
    rebuilt = await state_from_history(history.events, client.data_converter, workflow_id=handle.id)
    for state in (live, rebuilt):
        reserve = state.step("reserve")
        assert reserve.label == "reserve the room" and reserve.status is StepStatus.COMPENSATED
        assert reserve.compensation is not None
        assert reserve.compensation.name == "release the room"
        trace = render_trace(state)
        assert "✔️ reserve the room" in trace and "✔️ release the room" in trace
    ids = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "versioned/reserve" in ids and "versioned/reserve/compensate" in ids


async def record(client: Client, queue: str, version: type, **kwargs: Any) -> WorkflowHistory:
    inp = versioned(**kwargs)
    async with Worker(client, task_queue=queue, workflows=[version], activities=ACTIVITIES):
        handle = await start(client, queue, inp)
        await outcome(handle)
    return await handle.fetch_history()


async def test_the_life_cycle_deprecate_then_remove(client: Client, task_queue: str) -> None:
    # Step 2 (deprecated) replays what step 1 wrote, and step 3 what step 2 wrote, in
    # both paths; step 2 needs the sagas from before the change gone: it does not
    # replay their histories (they never ran insure).
    for fail in (None, "charge"):
        v2 = await record(client, task_queue, V2, fail=fail)
        v3 = await record(client, task_queue, V3, fail=fail)
        assert await replay(v2, V3) is None, fail
        assert await replay(v3, V4) is None, fail
    before = await record(client, task_queue, V1)
    assert await replay(before, V3) is not None


# --- sagas in flight during the deploy ----------------------------------------------


async def test_a_saga_that_reaches_the_new_step_after_the_deploy_runs_it(
    client: Client, task_queue: str
) -> None:
    inp = versioned(flaky="reserve")  # reserve waits for its retry while the code changes
    handle = await deploy(client, task_queue, inp, hold="reserve", new=V2)
    state = await outcome(handle)
    assert state.status is SagaStatus.SUCCEEDED
    assert state.step("insure").status is StepStatus.SUCCEEDED
    notify = state.step("notify")  # retired before this saga reached it
    assert notify.status is StepStatus.SKIPPED and notify.note == "not in this saga's version"
    assert sorted(CALLS[inp.run]) == ["charge", "insure", "reserve", "reserve"]


async def test_a_saga_past_the_new_step_at_the_deploy_finishes_as_it_began(
    client: Client, task_queue: str
) -> None:
    inp = versioned(flaky="charge")  # reserve done, notify and charge started: the old shape
    handle = await deploy(client, task_queue, inp, hold="charge", new=V2)
    state = await outcome(handle)
    assert state.status is SagaStatus.SUCCEEDED
    insure = state.step("insure")
    assert insure.status is StepStatus.SKIPPED and insure.note == "not in this saga's version"
    assert state.step("notify").status is StepStatus.SUCCEEDED  # ran before its retirement
    assert "insure" not in CALLS[inp.run]
    assert "⏭️ insure (not in this saga's version)" in render_trace(state)


async def test_a_saga_that_fails_after_the_deploy_undoes_the_old_steps_it_ran(
    client: Client, task_queue: str
) -> None:
    # charge fails for good on the new code: notify, retired since, ran on the old code
    # and is undone; insure never ran and is not.
    inp = versioned(flaky="charge", fail="charge")
    handle = await deploy(client, task_queue, inp, hold="charge", new=V2)
    state = await outcome(handle)
    assert state.status is SagaStatus.COMPENSATED
    undone = {c.removeprefix("undo ") for c in CALLS[inp.run] if c.startswith("undo ")}
    assert undone == {"reserve", "notify"}
    assert state.step("insure").compensation is None


async def test_a_saga_started_on_the_new_code_has_the_new_shape_and_undoes_it(
    client: Client, task_queue: str
) -> None:
    inp = versioned(fail="charge")
    async with Worker(client, task_queue=task_queue, workflows=[V2], activities=ACTIVITIES):
        state = await outcome(await start(client, task_queue, inp))
    assert state.status is SagaStatus.COMPENSATED
    assert state.step("notify").status is StepStatus.SKIPPED
    undone = {c.removeprefix("undo ") for c in CALLS[inp.run] if c.startswith("undo ")}
    assert undone == {"reserve", "insure"}


async def test_the_imperative_and_declarative_forms_take_since_and_until(
    client: Client, task_queue: str
) -> None:
    block, declared = versioned(), versioned()

    def step(name: str, **more: Any) -> StepSpec:
        arg = declared.call(name).model_dump()
        return StepSpec(name=name, activity="act", arg=arg, **more)

    spec = SagaSpec(
        name="declared",
        steps=[
            step("reserve"),
            step("insure", after=["reserve"], since={"deprecated": INSURE_PATCH}),
            step("notify", after=["reserve"], until=RETIRE_NOTIFY_PATCH),
        ],
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[RetiredInBlock, DeclarativeSaga],
        activities=ACTIVITIES,
    ):
        in_block = await client.execute_workflow(
            RetiredInBlock.run, block, id=f"block-{block.run}", task_queue=task_queue
        )
        result = await client.execute_workflow(
            DeclarativeSaga.run, spec, id=f"declared-{declared.run}", task_queue=task_queue
        )
    assert in_block == ["reserve", None, "charge"]  # a retired step awaits to None
    assert CALLS[block.run] == ["reserve", "charge"]
    assert result.state.step("insure").status is StepStatus.SUCCEEDED
    assert result.state.step("notify").status is StepStatus.SKIPPED
    assert CALLS[declared.run] == ["reserve", "insure"]


# --- definition errors -----------------------------------------------------------------


def test_since_and_until_take_a_patch_id_and_the_pivot_takes_neither() -> None:
    from temporal_saga import Saga

    saga = Saga("s")
    with pytest.raises(SagaTypeError, match="take a patch id"):
        saga.step("a", act, since="")
    with pytest.raises(SagaTypeError, match="take a patch id"):
        saga.step("a", act, until=3)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="cannot come and go with versions"):
        saga.step("p", act, pivot=True, since="x")


# --- replay-check: the same verdicts from the command line -------------------------


def replay_check(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temporal_saga", "replay-check", *args],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_replay_check_names_the_sagas_a_change_would_break(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    recorded = await record_v1(client, task_queue)
    ids = [h.workflow_id for h in recorded.values()]
    only_these = "WorkflowId IN (" + ", ".join(f'"{i}"' for i in ids) + ")"
    address = server_address(env)
    for _ in range(100):  # visibility lags the histories a little
        if (await client.count_workflows(only_these)).count == 3:
            break
        await asyncio.sleep(0.1)

    safe = await asyncio.to_thread(
        replay_check, "tests.versions:V2", "--query", only_these, address=address
    )
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert "3 histories replayed" in safe.stdout and "all replay" in safe.stdout

    unsafe = await asyncio.to_thread(
        replay_check, "tests.versions:V2Unsafe", "--query", only_these, address=address
    )
    assert unsafe.returncode == 1, unsafe.stdout + unsafe.stderr
    lines = unsafe.stdout.splitlines()
    for workflow_id in ids:  # one line each, naming the step that no longer matches
        [line] = [x for x in lines if x.startswith(f"{workflow_id}: ")]
        assert "starts step 'insure' where the history started 'notify'" in line, line
        assert "Nondeterminism" in line, line
    assert "3 would break" in lines[-1]

    files = []
    for phase, history in recorded.items():
        path = tmp_path / f"{phase.replace(' ', '-')}.json"
        path.write_text(history.to_json())
        files += ["--file", str(path)]
    offline = await asyncio.to_thread(
        replay_check, "tests.versions:V1Renamed", *files, "-o", "json", address="127.0.0.1:1"
    )
    assert offline.returncode == 1, offline.stdout + offline.stderr
    report = json.loads(offline.stdout)
    assert report["replayed"] == 3 and len(report["broken"]) == 3
    assert all("reserve the room" in b["reason"] for b in report["broken"])


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (None, None),  # the trip saga as it is
        (('compensation_name="cancel hotel room booking",', 'label="reserve a room",'), None),
        # The insurance step without since=: the histories that decided it break, each
        # naming its patch (a marker without its command, or in the payment's place).
        (('since="trip-insurance",', ""), "trip-insurance"),
        # A step renamed: every history breaks, naming both names.
        (
            ('"book hotel room",', '"reserve a room",'),
            "starts step 'reserve a room' where the history started 'book hotel room'",
        ),
        # A step added after the others, without since=: its command meets the end of
        # the histories that ran to the end, and the report still names it.
        (
            (
                "        await saga.run()\n",
                '        saga.step("send the itinerary", "send_itinerary", after=[insurance])\n'
                "        await saga.run()\n",
            ),
            "starts step 'send the itinerary', which the history never started",
        ),
    ],
    ids=["as is", "relabelled", "added without since", "renamed", "appended without since"],
)
def test_replay_check_stops_an_unsafe_change_to_the_trip_saga(
    edit: tuple[str, str] | None, named: str | None, tmp_path: Path
) -> None:
    # The trip saga's recorded histories (some from before the insurance step existed)
    # against workflows/trip.py as a team would edit it.
    source = (ROOT / "workflows" / "trip.py").read_text()
    if edit is not None:
        assert edit[0] in source
        source = source.replace(edit[0], edit[1], 1)
    (tmp_path / "edited_trip.py").write_text(source)
    histories = sorted((ROOT / "tests" / "histories").glob("trip_*.json"))
    files = [arg for path in histories for arg in ("--file", str(path))]
    checked = subprocess.run(
        [sys.executable, "-m", "temporal_saga", "replay-check", "edited_trip", *files],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == (0 if named is None else 1), checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[-1].startswith(f"{len(histories)} histories replayed"), checked.stdout
    if named is not None:
        assert [x for x in lines if x.startswith("history-trip_insured_since: ")]
        assert all(named in x for x in lines[:-1]), checked.stdout


def test_replay_check_splits_many_histories_over_processes(tmp_path: Path) -> None:
    source = (ROOT / "workflows" / "trip.py").read_text()
    (tmp_path / "renamed_trip.py").write_text(
        source.replace('"book hotel room",', '"reserve a room",', 1)
    )
    history = ROOT / "tests" / "histories" / "trip_cheap_since.json"
    checked = subprocess.run(
        [sys.executable, "-m", "temporal_saga", "replay-check", "renamed_trip", "--jobs", "2"]
        + ["--file", str(history)] * 250,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 251 and lines[-1].startswith("250 histories replayed"), lines[-3:]
    assert all("starts step 'reserve a room'" in line for line in lines[:-1])


def test_a_history_that_cannot_be_decoded_hints_at_the_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from temporal_saga._replay import _reason

    monkeypatch.delenv("TEMPORAL_SAGA_KEYS", raising=False)
    monkeypatch.delenv("TEMPORAL_SAGA_KEY_FILE", raising=False)
    reason = _reason(RuntimeError("Failed decoding arguments"))
    assert reason.startswith("Failed decoding arguments (its payloads may be encrypted")
    assert "TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE" in reason
    monkeypatch.setenv("TEMPORAL_SAGA_KEYS", "k1:...")  # a key given: no such hint
    assert _reason(RuntimeError("Failed decoding arguments")) == "Failed decoding arguments"
