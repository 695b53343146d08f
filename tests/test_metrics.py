"""Saga metrics and logs: a real worker.py serves metrics for Prometheus and a scrape
counts the sagas; the engine logs each status change once."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import opentelemetry.trace
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.testing import WorkflowEnvironment

from temporal_saga import SagaStatus
from temporal_saga.client import give_up, resolve_step
from temporal_saga.testing import SagaEnvironment, fake
from workflows.trip import BuyTripPackage

from .conftest import ROOT, free_port, running_worker_py
from .helpers import buy, trip, wait_for
from .kit_sagas import KitInput, KitSaga, book, cancel, pay

LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(address: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        found = LINE.match(line)
        if found:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', found["labels"] or ""))
            samples.append((found["name"], labels, float(found["value"])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of counter ``name`` (with or without ``_total``) with ``labels``."""
    return sum(
        value
        for sample, have, value in samples
        if sample in (name, f"{name}_total") and labels.items() <= have.items()
    )


async def test_a_scrape_of_worker_py_counts_sagas_steps_and_compensations(
    env: WorkflowEnvironment, client: Client, services: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    queue = f"metrics-{uuid.uuid4()}"
    log = tmp_path / "worker.log"
    with running_worker_py(env, queue, services, log, "--metrics-address", address):
        assert f"metrics at http://{address}/metrics" in log.read_text()
        await buy(client, queue, trip("Maria"))  # the last room in Venice: succeeds, insured
        with pytest.raises(WorkflowFailureError):
            await buy(client, queue, trip("Kevin"))  # the hotel is full: undone
        # The hotel is full for Lena too, and the airline refuses her refund: the saga
        # waits for a human until an operator resolves the flight.
        lena = trip("Lena", faults={"airline": "no_refund"})
        handle = await client.start_workflow(
            BuyTripPackage.run, lena, id=f"trip-{uuid.uuid4()}", task_queue=queue
        )
        await wait_for(handle, lambda state: state.status is SagaStatus.NEEDS_HUMAN)
        await resolve_step(handle, "book plane ticket", note="refunded by hand")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        samples = scrape(address)
    saga = {"saga": "buy trip package"}
    assert total(samples, "temporal_saga_sagas", status="SUCCEEDED", **saga) == 1
    assert total(samples, "temporal_saga_sagas", status="COMPENSATED", **saga) == 2
    assert total(samples, "temporal_saga_sagas", status="COMPENSATION_FAILED") == 0
    # Maria: six steps (the payment's confirmation, an event step, counts as one);
    # Kevin and Lena: plane and tickets, the hotel failed, insurance and payment skipped.
    assert total(samples, "temporal_saga_steps", outcome="SUCCEEDED", **saga) == 10
    assert total(samples, "temporal_saga_steps", outcome="FAILED", **saga) == 2
    assert total(samples, "temporal_saga_steps", outcome="SKIPPED", **saga) == 6
    assert total(samples, "temporal_saga_compensations", outcome="SUCCEEDED", **saga) == 3
    assert total(samples, "temporal_saga_compensations", outcome="FAILED", **saga) == 1
    assert total(samples, "temporal_saga_duration_count", status="COMPENSATED") == 2
    assert total(samples, "temporal_saga_compensation_duration_count") == 4
    assert total(samples, "temporal_saga_needs_human_entered", **saga) == 1
    assert total(samples, "temporal_saga_needs_human_left", how="resolved", **saga) == 1
    # Attempts, counted where the activities ran (an event step runs none, a Nexus
    # step runs in the other team's worker: Maria's insurance): each once.
    attempts = "temporal_saga_attempts"
    assert total(samples, attempts, kind="step", outcome="SUCCEEDED", **saga) == 8
    assert total(samples, attempts, kind="step", outcome="FAILED", **saga) == 2
    assert total(samples, attempts, kind="compensation", outcome="SUCCEEDED", **saga) == 3
    assert total(samples, attempts, kind="compensation", outcome="FAILED", **saga) == 1
    # The SDK's own worker metrics are there too, with the workflow type.
    assert any(name.startswith("temporal_") and "workflow" in name for name, _, _ in samples)
    # The compose stack's alert rules and Grafana dashboard ask for metrics that exist.
    exported = {name for name, _, _ in samples}
    deploy = ROOT / "deploy"
    for used in (
        deploy / "prometheus" / "alerts.yml",
        deploy / "grafana" / "dashboards" / "sagas.json",
    ):
        names = set(re.findall(r"temporal_saga_\w+", used.read_text()))
        assert names and names <= exported, (used.name, names - exported)


async def test_the_engine_logs_each_status_change_once(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    env = SagaEnvironment.from_client(client)
    doubles = [
        fake(book, returns="ok"),
        fake(cancel, fails="refunds refused"),
        fake(pay, fails="no"),
    ]
    with caplog.at_level(logging.INFO, logger="temporalio.workflow"):
        async with env.worker(workflows=[KitSaga], fakes=doubles) as worker:
            handle = await worker.start(KitSaga.run, KitInput())
            assert (await worker.outcome(handle)).status is SagaStatus.NEEDS_HUMAN
            await give_up(handle, note="refunds refused")
            outcome = await worker.outcome(handle)
            await worker.outcome(await worker.start(KitSaga.run, KitInput(deadline_hours=None)))
    assert outcome.status is SagaStatus.COMPENSATION_FAILED
    said = [
        (r.levelname, r.getMessage().split(" ({")[0])
        for r in caplog.records
        if r.name == "temporalio.workflow" and outcome.workflow_id in str(r.__dict__)
    ]
    assert said == [
        ("INFO", "saga 'kit': RUNNING"),
        ("WARNING", "saga 'kit': COMPENSATING (pay failed): no"),
        (
            "WARNING",
            "saga 'kit': NEEDS_HUMAN: waiting for an operator for: book flight, book hotel",
        ),
        ("ERROR", "saga 'kit': COMPENSATION_FAILED; needs a human: book flight, book hotel"),
    ], said


async def test_with_opentelemetry_a_saga_is_a_span_tree_of_its_steps_and_compensations(
    saga_time_skipping_env: SagaEnvironment,
) -> None:
    exporter = InMemorySpanExporter()
    provider = create_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    opentelemetry.trace.set_tracer_provider(provider)
    config = saga_time_skipping_env.client.config()
    config["plugins"] = [*config["plugins"], OpenTelemetryPlugin()]
    traced = SagaEnvironment.from_client(Client(**config))
    doubles = [fake(book, returns="ok"), fake(cancel), fake(pay, fails="card declined")]
    try:
        async with traced.worker(workflows=[KitSaga], fakes=doubles) as worker:
            outcome = await worker.run(KitSaga.run, KitInput())
    finally:
        provider.shutdown()  # the global provider stays set: later tests export nothing
    assert outcome.status is SagaStatus.COMPENSATED
    spans = {s.name: s for s in exporter.get_finished_spans()}
    saga = spans["saga kit"]
    assert saga.attributes is not None and saga.attributes["saga.status"] == "COMPENSATED"
    children = {
        name: dict(s.attributes or {})["saga.outcome"]
        for name, s in spans.items()
        if s.parent is not None and s.parent.span_id == saga.context.span_id
    }
    assert children == {
        "step book flight": "SUCCEEDED",
        "step book hotel": "SUCCEEDED",
        "step pay": "FAILED",
        "compensate book hotel": "SUCCEEDED",
        "compensate book flight": "SUCCEEDED",
    }


async def test_worker_py_takes_a_plugin_and_traces_sagas_with_it(
    env: WorkflowEnvironment,
    client: Client,
    services: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = tmp_path / "spans.jsonl"
    monkeypatch.setenv("SAGA_SPANS_FILE", str(spans))
    queue = f"traced-{uuid.uuid4()}"
    log = tmp_path / "worker.log"
    plugin = "tests.otel_worker_plugin:plugin"
    with running_worker_py(env, queue, services, log, "--plugin", plugin):
        with pytest.raises(WorkflowFailureError):
            await buy(client, queue, trip("Kevin", faults={"hotel": "down"}))
        await buy(client, queue, trip("Maria", destination="Paris"))
    assert "plugin: OpenTelemetryPlugin" in log.read_text()
    names = [json.loads(line)["name"] for line in spans.read_text().splitlines()]
    assert names.count("saga buy trip package") == 2
    for step in ("step book plane ticket", "step book hotel room", "step buy tourist tickets"):
        assert names.count(step) == 2, names


def test_worker_py_refuses_a_plugin_it_cannot_make(services: Path) -> None:
    for spec, words in (
        ("nothing", "expected MODULE:NAME"),
        ("no_such_module:x", "No module named 'no_such_module'"),
        ("json:dumps", "dumps() missing"),
        ("json:JSONDecoder", "JSONDecoder is not a Temporal plugin"),
    ):
        done = subprocess.run(
            [sys.executable, "worker.py", "--plugin", spec],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and words in done.stderr, (spec, done.stderr)
