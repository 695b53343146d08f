"""``worker.py --plugin tests.otel_worker_plugin:plugin`` in the tests: the SDK's
OpenTelemetry plugin, with its spans written as JSON lines to ``$SAGA_SPANS_FILE``."""

from __future__ import annotations

import os

import opentelemetry.trace
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider


def plugin() -> OpenTelemetryPlugin:
    provider = create_tracer_provider()
    out = open(os.environ["SAGA_SPANS_FILE"], "a", buffering=1)  # noqa: SIM115 (for the process)
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    opentelemetry.trace.set_tracer_provider(provider)
    return OpenTelemetryPlugin()
