"""The other team's worker in a process of its own, for the Nexus tests that kill it:
``TEMPORAL_ADDRESS=... python -m tests.nexus_team_worker NAMESPACE QUEUE``."""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_saga.client import SagaPlugin

from .nexus_team import TEAM_ACTIVITIES, TEAM_WORKFLOWS, InsuranceHandler


async def main(namespace: str, queue: str) -> None:
    client = await Client.connect(
        os.environ["TEMPORAL_ADDRESS"], namespace=namespace, plugins=[SagaPlugin()]
    )
    with ThreadPoolExecutor(4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            nexus_service_handlers=[InsuranceHandler()],
            workflows=TEAM_WORKFLOWS,
            activities=TEAM_ACTIVITIES,
            activity_executor=executor,
        ):
            print("ready", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
