"""What an event step costs, and how soon an early answer comes.

    python -m bench.events [--sagas 200] [--rounds 3]

Against a dev server and a ``bench.worker`` process of its own:

- **An event step against a hand-written wait.** ``HandWrittenWait`` keeps a payment
  from an Update and waits for it with ``workflow.wait_condition(..., timeout=5 min)``;
  ``EventStepSaga`` is a saga whose one step is an event step with the same timeout,
  fed by the ``saga_event`` Update. Each workflow is started, then sent its event once
  it waits; the worker's CPU time per workflow is compared head to head, the rounds
  rotated, and each workflow's history counted (events per workflow).
- **The early answer.** ``start_until_step`` starts a three-step ``HelperSaga`` whose
  steps each take 0.2 s and answers at its first step; the latency from the call to
  the answer is set against that step's own duration (from its state).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from temporal_saga.client import load_state, send_event, start_until_step

from ._processes import connect, cpu_seconds, start_worker, stop
from .compare import processes, ready
from .sagas import EventStepSaga, HandWrittenWait, HelperSaga, bench_spec

PAYMENT = {"amount": 120, "reference": "pay-7"}


async def _waits(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the workflow's timer (its wait's deadline) has started."""
    history = await handle.fetch_history()
    return any(e.HasField("timer_started_event_attributes") for e in history.events)


async def _fed(client: Client, queue: str, kind: str) -> WorkflowHandle[Any, Any]:
    """Start one workflow of ``kind``, send it its event once it waits, await it."""
    workflow_id = f"{kind}-{uuid.uuid4()}"
    workflow = HandWrittenWait.run if kind == "hand-written" else EventStepSaga.run
    handle = await client.start_workflow(workflow, id=workflow_id, task_queue=queue)
    # Both sent once the workflow waits (its timer started), read from the server's
    # history, which costs the worker nothing.
    while not await _waits(handle):  # noqa: ASYNC110  # polling the server is the point
        await asyncio.sleep(0.01)
    if kind == "hand-written":
        await handle.execute_update(HandWrittenWait.pay, PAYMENT)
    else:
        await send_event(handle, "payment", PAYMENT)
    await handle.result()
    return handle


async def waits(client: Client, queue: str, pid: int, sagas: int, rounds: int) -> dict[str, Any]:
    kinds = ["hand-written", "event step"]
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    events: dict[str, int] = {}
    for round_number in range(rounds):
        for kind in kinds[round_number % 2 :] + kinds[: round_number % 2]:
            began = cpu_seconds(pid)
            handles = await asyncio.gather(*(_fed(client, queue, kind) for _ in range(sagas)))
            cpu[kind].append((cpu_seconds(pid) - began) / sagas * 1000)
            history = await handles[0].fetch_history()
            events[kind] = len(history.events)
    return {
        "cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
        "cpu_ms_rounds": cpu,
        "events": events,
    }


async def early_answers(client: Client, queue: str, sagas: int) -> dict[str, Any]:
    latencies, steps = [], []
    for _ in range(sagas):
        workflow_id = f"early-{uuid.uuid4()}"
        began = time.monotonic()
        await start_until_step(
            client,
            HelperSaga.run,
            bench_spec(["first", "second", "third"], sleep=0.2, chain=True),
            step="first",
            id=workflow_id,
            task_queue=queue,
        )
        latencies.append((time.monotonic() - began) * 1000)
        handle = client.get_workflow_handle(workflow_id)
        await handle.result()
        state, _ = await load_state(handle)
        first = state.step("first")
        assert first.started_at is not None and first.ended_at is not None
        steps.append((first.ended_at - first.started_at).total_seconds() * 1000)
    return {
        "answer_ms": statistics.median(latencies),
        "answer_ms_p95": sorted(latencies)[int(0.95 * (len(latencies) - 1))],
        "step_ms": statistics.median(steps),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--address", help="a server of your own (default: start one)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-events-"))
    with processes(args.address, logs) as (address, _):
        client = await connect(address)
        queue = f"bench-{uuid.uuid4()}"
        worker = start_worker(address, queue, logs / "worker.log")
        try:
            await ready(logs / "worker.log", worker)
            await _fed(client, queue, "event step")  # warm up both paths
            await _fed(client, queue, "hand-written")
            wait = await waits(client, queue, worker.pid, args.sagas, args.rounds)
            early = await early_answers(client, queue, min(args.sagas, 50))
        finally:
            stop(worker)
    hand, step = wait["cpu_ms"]["hand-written"], wait["cpu_ms"]["event step"]
    print("| waiting for an event | hand-written wait_condition | event step | ratio |")
    print("|---|---|---|---|")
    print(
        f"| worker CPU per workflow (ms, median of {args.rounds} rounds) | {hand:.2f} | "
        f"{step:.2f} | {step / hand:.2f} |"
    )
    hand_events, step_events = wait["events"]["hand-written"], wait["events"]["event step"]
    print(
        f"| history events per workflow | {hand_events} | {step_events} | "
        f"{step_events / hand_events:.2f} |"
    )
    print()
    print("| early answer (start_until_step, first of three 0.2 s steps) | ms |")
    print("|---|---|")
    print(f"| request to answer, median | {early['answer_ms']:.0f} |")
    print(f"| request to answer, p95 | {early['answer_ms_p95']:.0f} |")
    print(f"| the step's own duration, median | {early['step_ms']:.0f} |")
    print(f"rounds (ms per workflow): {wait['cpu_ms_rounds']}")


if __name__ == "__main__":
    asyncio.run(main())
