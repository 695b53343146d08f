"""Replay safety: stored histories of every workflow shape replay without error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from temporal_saga import SagaStatus, StepStatus
from temporal_saga.client import data_converter, state_from_history
from temporal_saga.testing import replay

with workflow.unsafe.imports_passed_through():
    from temporal_saga import SagaResult

    from .record_histories import HISTORIES, SHAPES, WORKFLOWS
    from .scripted import ScriptedSaga, ScriptedSpec


def stored(name: str) -> WorkflowHistory:
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json(f"history-{name}", path.read_text())


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_stored_history_replays(name: str) -> None:
    report = await replay(WORKFLOWS, files=[HISTORIES / f"{name}.json"])
    assert report.replayed == 1 and report.broken == [], report.broken


@workflow.defn(name="ScriptedSaga")
class ScriptedSagaWithAChangedCommand:
    """ScriptedSaga after a non-deterministic edit: a timer before the saga."""

    @workflow.run
    async def run(self, spec: ScriptedSpec) -> SagaResult:
        await workflow.sleep(1)
        return await ScriptedSaga().run(spec)


async def test_a_non_deterministic_change_is_caught() -> None:
    replayer = Replayer(
        workflows=[ScriptedSagaWithAChangedCommand], data_converter=data_converter()
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(stored("success"))
    # The testing kit's replay reports it instead of raising.
    report = await replay([ScriptedSagaWithAChangedCommand], histories=[stored("success")])
    [broken] = report.broken
    assert "nondetermin" in broken.reason.lower(), broken


def test_every_shape_has_a_stored_history() -> None:
    assert {p.stem for p in Path(HISTORIES).glob("*.json")} == set(SHAPES)


def test_the_sagastatus_check_is_patched_in() -> None:
    """Sagas started before the check existed replay without it (see trip_success)."""

    def markers(name: str) -> list[str]:
        return [
            e.marker_recorded_event_attributes.marker_name
            for e in stored(name).events
            if e.HasField("marker_recorded_event_attributes")
        ]

    assert markers("trip_success") == []
    assert markers("trip_success_checked") == ["core_patch", "core_local_activity"]


def test_the_insurance_step_is_patched_in() -> None:
    """Trips started before the conditional insurance step existed replay without it
    (trip_success, trip_success_checked); new ones record the patch and insure."""
    insured = stored("trip_insured")
    patches = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in insured.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert any(b"trip-insurance" in data for data in patches)
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in insured.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "buy_insurance" in scheduled


async def test_sagas_that_ended_compensation_failed_before_the_wait_still_replay() -> None:
    """A saga whose compensation failed for good closed at once before NEEDS_HUMAN
    existed; one started then with the default human_timeout (wait) must replay as it
    ran, not wait (the wait is patched in)."""
    history = stored("compensation_failure")
    started = history.events[0].workflow_execution_started_event_attributes
    payload = started.input.payloads[0]
    spec = json.loads(payload.data)
    assert "human_timeout" not in spec  # recorded before the option existed
    payload.data = json.dumps({**spec, "human_timeout": None}).encode()
    replayer = Replayer(workflows=[ScriptedSaga], data_converter=data_converter())
    await replayer.replay_workflow(history)
    # And the same saga with the wait, recorded since: the patch marker is there.
    waited = stored("needs_human_given_up")
    patches = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in waited.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(b"temporal-saga/needs-human" in p for p in patches)


async def test_a_workflow_that_ran_a_saga_twice_is_rebuilt_as_its_last_run() -> None:
    """retry_loop ran "scripted" twice: b failed the first time (a was undone), then
    both succeeded; the state rebuilt from history is the second run's."""
    history = stored("retry_loop")
    state = await state_from_history(history.events, data_converter())
    assert state.status is SagaStatus.SUCCEEDED and state.failed_step is None
    assert [(s.name, s.status) for s in state.steps] == [
        ("a", StepStatus.SUCCEEDED),
        ("b", StepStatus.SUCCEEDED),
    ]
