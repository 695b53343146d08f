"""The other team's worker in a process of its own, for the Nexus tests that kill it:
``TEMPORAL_ADDRESS=... python -m tests.nexus_team_worker NAMESPACE QUEUE``."""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client

from temporal_saga.client import SagaPlugin

from .nexus_team import team_worker


async def main(namespace: str, queue: str) -> None:
    client = await Client.connect(
        os.environ["TEMPORAL_ADDRESS"], namespace=namespace, plugins=[SagaPlugin()]
    )
    with ThreadPoolExecutor(4) as executor:
        async with team_worker(client, queue, executor):
            print("ready", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
