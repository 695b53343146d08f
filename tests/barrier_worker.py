"""A worker process for the barrier's tests: ``TEMPORAL_ADDRESS=... python -m
tests.barrier_worker QUEUE`` serves ``RoomSaga`` and its activities until killed."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.worker import Worker

from temporal_saga.client import connect

from .barrier_work import RoomSaga, book_room, cancel_room


async def main(queue: str) -> None:
    client = await connect()  # TEMPORAL_ADDRESS
    with ThreadPoolExecutor(64) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[RoomSaga],
            activities=[book_room, cancel_room],
            activity_executor=executor,
            max_concurrent_activities=64,
            max_cached_workflows=0,  # no sticky queue: a killed worker's tasks move at once
        ):
            print("ready", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
