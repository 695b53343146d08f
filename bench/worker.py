"""The benchmark's worker process: ``python -m bench.worker --address HOST:PORT --queue Q``.

Runs the benchmark's workflows and activities until terminated. Payloads are encrypted
when ``TEMPORAL_SAGA_KEYS`` is set (the saga data converter reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from temporalio.worker import Worker

from ._processes import connect
from .sagas import ACTIVITIES, WORKFLOWS
from .sagas_plain_import import PlainImportSaga


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    client = await connect(args.address)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    async with Worker(
        client,
        task_queue=args.queue,
        workflows=[*WORKFLOWS, PlainImportSaga],
        activities=ACTIVITIES,
        max_concurrent_activities=512,  # the width phase runs 256 steps at once
        max_cached_workflows=4000,
    ):
        print("worker ready", flush=True)
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
