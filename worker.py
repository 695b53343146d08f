"""The trip-package worker: ``python worker.py [--task-queue trip-saga]``.

Connects like the ``temporal`` CLI (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS,
``TEMPORAL_API_KEY``, profile files), serves the ``BuyTripPackage`` workflow, the
generic ``DeclarativeSaga`` (sagas sent as JSON) and the trip activities; on
SIGINT/SIGTERM it stops polling and lets in-flight activities finish (up to
``--grace`` seconds) before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Worker

from activities.ledger import data_dir
from activities.trip import ALL
from temporal_saga.client import connect
from temporal_saga.declarative import DeclarativeSaga
from workflows.group_trip import BookGroupTrip
from workflows.trip import TASK_QUEUE, BuyTripPackage

log = logging.getLogger("worker")


async def serve(task_queue: str, grace: float, concurrency: int) -> None:
    client = await connect(connect_timeout=timedelta(seconds=10))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # The activities are plain functions: they run in this thread pool.
    with ThreadPoolExecutor(max_workers=concurrency) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[BuyTripPackage, BookGroupTrip, DeclarativeSaga],
            activities=ALL,
            activity_executor=executor,
            max_concurrent_activities=concurrency,
            graceful_shutdown_timeout=timedelta(seconds=grace),
        ):
            log.info(
                "serving task queue %r at %s (namespace %r); services' data in %s",
                task_queue,
                client.service_client.config.target_host,
                client.namespace,
                data_dir(),
            )
            await stop.wait()
            log.info("stopping: in-flight activities get up to %s s to finish", grace)
    log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The trip-package worker: serves the trip sagas and their services' "
        "activities. Connects like the temporal CLI (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, "
        "TEMPORAL_API_KEY, TLS settings); encrypts with TEMPORAL_SAGA_KEYS or "
        "TEMPORAL_SAGA_KEY_FILE.",
    )
    parser.add_argument(
        "--task-queue", default=TASK_QUEUE, help=f"the queue to poll (default {TASK_QUEUE})"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="on SIGINT/SIGTERM, seconds to let running activities finish (default 10)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="activities run at once (default 32)"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code = 0
    try:
        asyncio.run(serve(args.task_queue, args.grace, args.concurrency))
    except Exception as err:
        log.error("worker failed: %s", err)
        code = 1
    # Leave without interpreter teardown: the SDK's runtime can crash there
    # (sdk-python issue 300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
