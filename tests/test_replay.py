"""Replay safety: stored histories of every workflow shape replay without error."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from temporal_saga.client import data_converter

with workflow.unsafe.imports_passed_through():
    from temporal_saga import SagaResult

    from .record_histories import HISTORIES, SHAPES, WORKFLOWS
    from .scripted import ScriptedSaga, ScriptedSpec


def stored(name: str) -> WorkflowHistory:
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json(f"history-{name}", path.read_text())


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_stored_history_replays(name: str) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter())
    await replayer.replay_workflow(stored(name))


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
