"""How large a saga fits in one workflow: events per step, and where the guard stops it.

    python -m bench.large [--width 4999] [--last-fails] [--max-parallelism N]
                          [--max-concurrent-activities 100]

Runs one fan-out saga of ``width`` steps (each with a compensation), optionally
followed by one step, after all of them, that fails, against its own dev server with
one in-process worker, and prints how it ended, how many history events it took per
step (forward and undoing), how long it took, and how long replaying its whole history
takes (what a worker that lost the workflow from its cache pays, within the workflow
task timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from temporal_saga import SagaFailed
from temporal_saga._sdk import local_temporal_cli
from temporal_saga.client import SagaPlugin, data_converter

from .sagas import ACTIVITIES, LargeHelperSaga, LargeSpec

_SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4999)
    parser.add_argument("--last-fails", action="store_true")
    parser.add_argument("--max-concurrent-activities", type=int, default=100)
    parser.add_argument("--max-parallelism", type=int, help="the saga's (default: its own)")
    args = parser.parse_args()
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=local_temporal_cli(),
        data_converter=data_converter(),
        plugins=[SagaPlugin()],
        dev_server_log_level="error",
    ) as env:
        queue = f"large-{uuid.uuid4()}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[LargeHelperSaga],
            activities=ACTIVITIES,
            max_concurrent_activities=args.max_concurrent_activities,
        ):
            began = time.monotonic()
            handle = await env.client.start_workflow(
                LargeHelperSaga.run,
                LargeSpec(
                    width=args.width,
                    last_fails=args.last_fails,
                    max_parallelism=args.max_parallelism,
                ),
                id=f"large-{uuid.uuid4()}",
                task_queue=queue,
            )
            try:
                outcome = await handle.result()
            except WorkflowFailureError as err:
                failure = SagaFailed.from_error(err)
                outcome = f"{failure.state.status.value}: {failure}" if failure else repr(err)
            took = time.monotonic() - began
        history = await handle.fetch_history()
        events = history.events
        replay_began = time.monotonic()
        await Replayer(
            workflows=[LargeHelperSaga], data_converter=data_converter()
        ).replay_workflow(history)
        replayed = time.monotonic() - replay_began
    steps = [e for e in events if e.event_type == _SCHEDULED]
    undo = [
        s
        for s in steps
        if s.activity_task_scheduled_event_attributes.activity_id.endswith("/compensate")
    ]
    first_undo = next((e.event_id for e in events if e in undo), len(events))
    forward = len(steps) - len(undo)
    print(f"outcome: {outcome}")
    print(f"steps started: {forward} of {args.width + args.last_fails}; compensations: {len(undo)}")
    print(
        f"history events: {len(events)} (forward {first_undo}, undoing {len(events) - first_undo})"
    )
    if forward:
        print(f"events per step forward: {first_undo / forward:.2f}")
    if undo:
        print(f"events per compensation: {(len(events) - first_undo) / len(undo):.2f}")
    print(f"duration: {took:.1f} s")
    print(f"replaying the whole history: {replayed:.1f} s (a worker restart costs this)")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
