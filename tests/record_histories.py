"""Re-record the stored workflow histories that ``test_replay.py`` replays.

Run ``make histories`` after a deliberate change to a workflow's commands; commit the
JSON files with it. Each shape the project ships has one history.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from .conftest import temporal_binary
from .scripted import ScriptedSaga, ScriptedSpec, ScriptedStep, do_step, undo_step

HISTORIES = Path(__file__).parent / "histories"

SHAPES: dict[str, list[ScriptedStep]] = {
    "success": [
        ScriptedStep(name="a", sleep=0.1),
        ScriptedStep(name="b", sleep=0.3),
        ScriptedStep(name="c", after=["a"]),
    ],
    "failure": [
        ScriptedStep(name="a", sleep=0.1),
        ScriptedStep(name="b", fail="no available hotel rooms", sleep=0.3),
        ScriptedStep(name="c", after=["a"]),
    ],
    "compensation_failure": [
        ScriptedStep(name="a", undo_fail="cannot cancel"),
        ScriptedStep(name="b", fail="boom", sleep=0.3),
    ],
}


async def record(client: Client, name: str, steps: list[ScriptedStep]) -> None:
    queue = f"record-{uuid.uuid4()}"
    spec = ScriptedSpec(run=f"record-{name}", steps=steps)
    async with Worker(
        client, task_queue=queue, workflows=[ScriptedSaga], activities=[do_step, undo_step]
    ):
        handle = await client.start_workflow(
            ScriptedSaga.run, spec, id=f"history-{name}-{uuid.uuid4()}", task_queue=queue
        )
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter
    ) as env:
        for name, steps in SHAPES.items():
            await record(env.client, name, steps)
            print(f"recorded {name}")


if __name__ == "__main__":
    asyncio.run(main())
