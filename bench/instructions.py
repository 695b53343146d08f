"""Instructions per saga in workflow code: the engine's cost, counted, not timed.

``python -m bench.instructions`` records sagas of each contender on a dev server (three
steps, plain JSON payloads, all succeeding), then replays each contender's histories
under Valgrind's callgrind, threads counted apart, and reports how many instructions
the thread that runs workflow activations executed per saga. The replay is
unsandboxed, on one workflow thread, with the garbage collector off and a fixed hash
seed, so the count does not move with the machine's load: two runs agree within
0.1 %, where CPU time on this machine varies ±15 % from round to round. A change of
1 % of what the engine adds to a hand-written saga shows.

What it leaves out, on purpose: the sandbox (it re-imports the workflow's module for
each run, the same for every contender), garbage collection (the side-by-side phase
of ``bench.compare`` measures the live worker with both), and what only happens live
(metrics; logs at INFO). Needs ``valgrind`` (Debian: ``apt install valgrind``); about
ten minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from temporal_saga.client import SagaPlugin

from ._processes import connect, start_worker, stop
from .compare import CONTENDERS, HAND, HELPER, HERE, SUMMARIES, THREE_STEPS, Bench, processes
from .compare import ready as worker_ready
from .sagas import WORKFLOWS, bench_spec

NAMES = [HAND, SUMMARIES, HELPER]


async def record(sagas: int, into: Path, address: str | None) -> dict[str, Path]:
    """Run ``sagas`` sagas of each contender; save their histories, one file each."""
    logs = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    files = {}
    with processes(address, logs) as (address, server_pid):
        client = await connect(address)
        queue = f"bench-{uuid.uuid4()}"
        worker = start_worker(address, queue, logs / "worker.log")
        try:
            await worker_ready(logs / "worker.log", worker)
            bench = Bench(client, queue, worker.pid, server_pid)
            for name in NAMES:
                batch = await bench.batch(CONTENDERS[name], bench_spec(THREE_STEPS), sagas)
                histories = [(await h.fetch_history()).to_json() for h in batch.handles]
                files[name] = into / f"{CONTENDERS[name].__name__}.json"
                files[name].write_text(json.dumps(histories))
        finally:
            stop(worker)
    return files


async def _each(items: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for item in items:
        yield item


def load(path: Path) -> list[WorkflowHistory]:
    """The histories :func:`record` saved."""
    return [
        WorkflowHistory.from_json(f"saga-{i}", h)
        for i, h in enumerate(json.loads(path.read_text()))
    ]


async def replay(histories: list[WorkflowHistory]) -> None:
    """Replay ``histories`` (run under Valgrind by :func:`count`)."""
    gc.disable()
    replayer = Replayer(
        workflows=WORKFLOWS,
        plugins=[SagaPlugin()],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_task_executor=ThreadPoolExecutor(1),  # every activation on one thread
    )
    await replayer.replay_workflows(_each(histories))


def count(path: Path, sagas: int, *, smoke: bool = False) -> float:
    """Instructions per saga on the workflow thread, replaying ``path`` under callgrind
    (with ``smoke``, the replay alone, for CI: 0)."""
    with tempfile.TemporaryDirectory() as out:
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}/callgrind",
        ]
        subprocess.run(
            [
                *([] if smoke else valgrind),
                sys.executable,
                "-m",
                "bench.instructions",
                "--replay",
                str(path),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            cwd=HERE.parent,
            check=True,
            capture_output=True,
        )
        if smoke:
            return 0.0
        totals = {}
        for thread in Path(out).glob("callgrind-*"):
            with thread.open() as lines:
                totals[thread.name] = next(
                    int(line.split()[1]) for line in lines if line.startswith("summary:")
                )
    # Thread 1 is the main one (it also parses the histories); the busiest of the
    # others runs the activations (the rest are the SDK core's).
    del totals["callgrind-01"]
    return max(totals.values()) / sagas


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--address", help="use this server instead of starting one")
    parser.add_argument("--smoke", action="store_true", help="replay without counting (CI)")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay is not None:
        await replay(load(args.replay))
        return {}
    if shutil.which("valgrind") is None and not args.smoke:
        raise SystemExit("bench.instructions needs valgrind (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory() as histories:
        files = await record(args.sagas, Path(histories), args.address)
        per_saga = {name: count(files[name], args.sagas, smoke=args.smoke) for name in NAMES}
    if args.smoke:
        print("replayed every contender's histories")
        return {"per_saga": per_saga}
    figures = {
        "sagas": args.sagas,
        "per_saga": per_saga,
        "helper_over": {name: per_saga[HELPER] / per_saga[name] for name in (HAND, SUMMARIES)},
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["instructions"] = figures
    args.out.write_text(json.dumps(results, indent=2))
    for name in NAMES:
        print(f"{name:26} {per_saga[name] / 1e6:6.3f} M instructions per saga")
    for name, ratio in figures["helper_over"].items():
        print(f"{HELPER} / {name}: {ratio:.3f}")
    return figures


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
