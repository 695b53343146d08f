"""Helpers shared by the tests that run scripted sagas."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from temporal_saga import SagaFailed, SagaResult

from .scripted import (
    JOURNAL,
    HandWrittenParallel,
    ScriptedSaga,
    ScriptedSpec,
    ScriptedStep,
    do_step,
    undo_step,
)

WORKFLOWS = [ScriptedSaga, HandWrittenParallel]
ACTIVITIES = [do_step, undo_step]


def spec(*steps: ScriptedStep, **options: object) -> ScriptedSpec:
    return ScriptedSpec(run=str(uuid.uuid4()), steps=list(steps), **options)  # type: ignore[arg-type]


async def run_saga(client: Client, task_queue: str, s: ScriptedSpec) -> SagaResult:
    return await client.execute_workflow(
        ScriptedSaga.run, s, id=f"saga-{s.run}", task_queue=task_queue
    )


async def fail_saga(client: Client, task_queue: str, s: ScriptedSpec) -> SagaFailed:
    with pytest.raises(WorkflowFailureError) as caught:
        await run_saga(client, task_queue, s)
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None, f"not a saga failure: {caught.value.cause!r}"
    return failure


def did(s: ScriptedSpec, kind: str) -> set[str]:
    """The steps whose `kind` ("do"/"undo") activity succeeded at least once."""
    return {e.step for e in JOURNAL[s.run] if e.kind == kind and e.ok}


def entry(s: ScriptedSpec, kind: str, step: str) -> tuple[float, float]:
    [found] = [e for e in JOURNAL[s.run] if e.kind == kind and e.step == step and e.ok]
    return found.started, found.ended
