"""The insurer's worker: ``python -m insurer.worker [--task-queue insurer]``.

Serves the insurer's Nexus service in its own namespace (``insurer``, or
``--namespace``), for the endpoint ``trip-insurer`` to route to. Connects like the
``temporal`` CLI (``TEMPORAL_ADDRESS``...), with the sagas' data converter (encrypted
with ``TEMPORAL_SAGA_KEYS``, as the trip team's workers: both ends read the payloads).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta

from temporalio.worker import Worker

from activities.ledger import describe, where
from temporal_saga.client import connect

from .handler import InsuranceHandler
from .service import INSURER_NAMESPACE, INSURER_TASK_QUEUE

log = logging.getLogger("insurer.worker")


async def serve(namespace: str, task_queue: str) -> None:
    client = await connect(namespace=namespace, connect_timeout=timedelta(seconds=10))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Worker(client, task_queue=task_queue, nexus_service_handlers=[InsuranceHandler()]):
        log.info(
            "serving the insurer's Nexus service on task queue %r (namespace %r); policies: %s",
            task_queue,
            namespace,
            describe(where()),
        )
        await stop.wait()
    log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The insurer's worker: its Nexus service (buy and cancel insurance)."
    )
    parser.add_argument("--namespace", default=INSURER_NAMESPACE)
    parser.add_argument("--task-queue", default=INSURER_TASK_QUEUE)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code = 0
    try:
        asyncio.run(serve(args.namespace, args.task_queue))
    except Exception as err:
        log.error("worker failed: %s", err)
        code = 1
    # Skip the interpreter's teardown, where the SDK's threads can crash it
    # (sdk-python#300), as worker.py does.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
