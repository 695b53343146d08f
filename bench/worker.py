"""The benchmark's worker process: ``python -m bench.worker --address HOST:PORT --queue Q``.

Runs the benchmark's workflows and activities until terminated. Payloads are encrypted
when ``TEMPORAL_SAGA_KEYS`` is set (the saga data converter reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from temporalio.worker import Worker

from ._processes import connect
from .sagas import ACTIVITIES, WORKFLOWS
from .sagas_plain_import import PlainImportSaga


class GcClock:
    """The CPU time this process spends collecting garbage (``gc.callbacks``), in all
    threads: the side-by-side phase reads it per round (``--gc-stats``, ``SIGUSR1``)."""

    def __init__(self) -> None:
        self.stats = {"report": 0, "seconds": 0.0, "collections": 0, "full": 0, "full_seconds": 0.0}
        self._began = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, Any]) -> None:
        # A collection holds the GIL from start to stop: no other one interleaves.
        if phase == "start":
            self._began = time.thread_time()
            return
        took = time.thread_time() - self._began
        self.stats["seconds"] += took
        self.stats["collections"] += 1
        if info["generation"] == 2:
            self.stats["full"] += 1
            self.stats["full_seconds"] += took

    def report(self, path: Path) -> None:
        self.stats["report"] += 1
        path.with_suffix(".tmp").write_text(json.dumps(self.stats))
        path.with_suffix(".tmp").replace(path)  # never read half written


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--gc-stats", type=Path, help="write GC time here on SIGUSR1")
    args = parser.parse_args()
    if args.gc_stats:
        clock = GcClock()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, clock.report, args.gc_stats)
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
