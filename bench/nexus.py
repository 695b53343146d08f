"""What a Nexus step costs against the same step as an activity.

    python -m bench.nexus [--sagas 200] [--rounds 5]

On a dev server of its own with a second namespace (another team's), whose worker
serves ``QuoteService`` behind the endpoint ``bench-team``: a one-step saga
(``QuoteSaga``) whose step is an activity of the saga's own worker, or that team's
synchronous Nexus operation doing the same nothing; and the Nexus call hand-written
in a plain workflow (``HandWrittenQuote``), for the engine's own share. Each
workflow runs alone (start to result, one after the other: latency, not
throughput); the rounds rotate the contenders; the figures are the medians and 95th
percentiles of all runs, each contender's history events per workflow, and the
step's call alone: from its scheduled event to its completed one (the server's
timestamps).
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

from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from temporal_saga.client import SagaPlugin

from ._processes import connect, free_port, start_server, stop
from .sagas import (
    NEXUS_ENDPOINT,
    HandWrittenQuote,
    QuoteHandler,
    QuoteSaga,
    quote,
    unquote,
)

TEAM = "bench-team"
CONTENDERS = ("saga, activity step", "saga, Nexus step", "hand-written Nexus call")


def _call_seconds(events: list[Any]) -> float:
    """From the step's scheduled event to its completed one (activity or Nexus)."""
    names = ("activity_task_scheduled", "nexus_operation_scheduled")
    scheduled = next(e for e in events if any(e.HasField(f"{n}_event_attributes") for n in names))
    names = ("activity_task_completed", "nexus_operation_completed")
    completed = next(e for e in events if any(e.HasField(f"{n}_event_attributes") for n in names))
    return (completed.event_time.ToNanoseconds() - scheduled.event_time.ToNanoseconds()) / 1e9


async def _run(client: Client, queue: str, kind: str) -> tuple[float, int, float]:
    """One workflow of ``kind``, alone: seconds from start to result, history events,
    and seconds from the call's scheduling to its completion (the server's clock)."""
    workflow_id = f"{kind.replace(' ', '-').replace(',', '')}-{uuid.uuid4()}"
    began = time.perf_counter()
    handle: WorkflowHandle[Any, str]
    if kind == "hand-written Nexus call":
        handle = await client.start_workflow(HandWrittenQuote.run, id=workflow_id, task_queue=queue)
    else:
        nexus = kind == "saga, Nexus step"
        handle = await client.start_workflow(QuoteSaga.run, nexus, id=workflow_id, task_queue=queue)
    await handle.result()
    took = time.perf_counter() - began
    history = await handle.fetch_history()
    return took, len(history.events), _call_seconds(list(history.events))


async def measure(sagas: int, rounds: int) -> dict[str, dict[str, float]]:
    folder = Path(tempfile.mkdtemp(prefix="bench-nexus-"))
    port = free_port()
    server = start_server(port, folder / "server.log", (TEAM,))
    try:
        address = f"127.0.0.1:{port}"
        client = await connect(address)
        team = await Client.connect(address, namespace=TEAM, plugins=[SagaPlugin()])
        queue = f"bench-{uuid.uuid4()}"
        await client.operator_service.create_nexus_endpoint(
            CreateNexusEndpointRequest(
                spec=EndpointSpec(
                    name=NEXUS_ENDPOINT,
                    target=EndpointTarget(
                        worker=EndpointTarget.Worker(namespace=TEAM, task_queue=queue)
                    ),
                )
            )
        )
        latencies: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
        calls: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
        events: dict[str, int] = {}
        async with (
            Worker(
                client,
                task_queue=queue,
                workflows=[QuoteSaga, HandWrittenQuote],
                activities=[quote, unquote],
            ),
            Worker(team, task_queue=queue, nexus_service_handlers=[QuoteHandler()]),
        ):
            for kind in CONTENDERS:  # warm up: the first run of each pays for imports
                await _run(client, queue, kind)
            for number in range(rounds):
                shift = number % len(CONTENDERS)
                for kind in CONTENDERS[shift:] + CONTENDERS[:shift]:
                    for _ in range(sagas):
                        took, counted, call = await _run(client, queue, kind)
                        latencies[kind].append(took * 1e3)
                        calls[kind].append(call * 1e3)
                        events[kind] = counted
    finally:
        stop(server)
    return {
        kind: {
            "median ms": statistics.median(values),
            "p95 ms": statistics.quantiles(values, n=20)[-1],
            "call median ms": statistics.median(calls[kind]),
            "history events": events[kind],
        }
        for kind, values in latencies.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200, help="workflows per contender and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.sagas, args.rounds))
    activity = results["saga, activity step"]
    print(
        "| one-step workflow, alone | history events | median ms | p95 ms | median vs activity "
        "| the call, scheduled to completed, median ms |"
    )
    print("|---|---|---|---|---|---|")
    for kind, figures in results.items():
        ratio = figures["median ms"] / activity["median ms"]
        print(
            f"| {kind} | {figures['history events']:.0f} | {figures['median ms']:.1f} "
            f"| {figures['p95 ms']:.1f} | {ratio:.2f} | {figures['call median ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
