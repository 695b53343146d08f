"""OpenTelemetry spans for a saga, its steps and its compensations, when tracing is on.

With the SDK's ``OpenTelemetryPlugin`` (``temporalio.contrib.opentelemetry``) on the
worker's client and a tracer provider made with its ``create_tracer_provider``, a
saga produces a span ``saga NAME`` with a child span per step (``step NAME``) and per
compensation (``compensate NAME``): the saga's status and each step's or
compensation's outcome are attributes (``saga.status``, ``saga.outcome``), so a trace
viewer shows the saga as the Web UI does. The plugin makes the spans replay-safe.
Without OpenTelemetry loaded in the worker nothing is done: the engine never imports
it itself (that would load it into every worker, and into every sandboxed run).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Any

_TRACE = "opentelemetry.trace"


class SagaSpans:
    """The spans of one saga run: the saga's, and its children's."""

    __slots__ = ("_context", "_saga", "_tracer")

    def __init__(self, saga: str) -> None:
        trace = sys.modules.get(_TRACE)
        self._tracer: Any = None
        self._saga: Any = None
        self._context: Any = None
        if trace is not None:
            self._tracer = trace.get_tracer("temporal_saga")
            self._saga = self._tracer.start_span(f"saga {saga}", attributes={"saga.name": saga})
            self._context = trace.set_span_in_context(self._saga)

    def start(self, kind: str, step: str) -> Any:
        """Start a child span of the saga's, ``KIND STEP`` (None without tracing)."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(f"{kind} {step}", context=self._context)

    @staticmethod
    def end(span: Any, outcome: StrEnum) -> None:
        """End a child span with its outcome."""
        if span is not None:
            span.set_attribute("saga.outcome", outcome.value)
            span.end()

    def finish(self, status: StrEnum) -> None:
        """End the saga's span with its final status."""
        if self._saga is not None:
            self._saga.set_attribute("saga.status", status.value)
            self._saga.end()
