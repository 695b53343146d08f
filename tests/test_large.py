"""Large sagas on a real server: thousands of steps stay within Temporal's limits.

A 5,000-step saga that fails at its very end undoes all 5,000 steps and closes
compensated (its ``SagaFailed`` stays small, its history gives every step's
state); a 3,000-wide fan-out stays under the server's limit of pending
activities.
"""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from temporal_saga import SagaFailed, SagaStatus, StepStatus

from .conftest import WorkerFactory
from .helpers import ACTIVITIES
from .scripted import JOURNAL, LargeSaga, LargeSpec
from .test_undo_always import rebuild

pytestmark = pytest.mark.timeout(600)


async def test_a_5000_step_saga_that_fails_late_closes_compensated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    spec = LargeSpec(run=str(uuid.uuid4()), width=4999, last_fails=True)
    workflow_id = f"large-{spec.run}"
    async with worker(workflows=[LargeSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                LargeSaga.run, spec, id=workflow_id, task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "last"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.state.omitted_steps == 4999  # bounded: the failed step only
    undone = {e.step for e in JOURNAL[spec.run] if e.kind == "undo" and e.ok}
    assert len(undone) == 4999
    # Every step's state, from history (a query of the closed saga would replay all
    # of it first: about 30 s here, see bench/large.py).
    rebuilt = await rebuild(client, workflow_id)
    assert rebuilt.status is SagaStatus.COMPENSATED and rebuilt.failed_step == "last"
    assert len(rebuilt.steps) == 5000
    assert sum(s.status is StepStatus.COMPENSATED for s in rebuilt.steps) == 4999
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    print(f"5,000-step saga: {len(history.events)} history events")


async def test_a_3000_wide_fan_out_stays_under_the_pending_activity_limit(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    spec = LargeSpec(run=str(uuid.uuid4()), width=3000)
    async with worker(workflows=[LargeSaga], activities=ACTIVITIES):
        status = await client.execute_workflow(
            LargeSaga.run, spec, id=f"large-{spec.run}", task_queue=task_queue
        )
    assert status == "SUCCEEDED"
    assert len({e.step for e in JOURNAL[spec.run] if e.kind == "do" and e.ok}) == 3000
