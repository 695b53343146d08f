"""Saga metrics, recorded through the workflow's metric meter.

The SDK's runtime exports them with its own (to Prometheus, say: ``worker.py
--metrics-address``); a runtime without metrics drops them. Replay-safe: the SDK
records nothing while a workflow replays, so a saga is counted once however often
its history is replayed. Every metric carries the saga's name as ``saga``.

* ``temporal_saga_sagas`` (counter, ``status``): sagas that ended, by final status.
* ``temporal_saga_duration`` (histogram, ms, ``status``): from start to end.
* ``temporal_saga_steps`` (counter, ``outcome``): steps that ended, by outcome
  (``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``SKIPPED``).
* ``temporal_saga_compensations`` (counter, ``outcome``): compensations that ended
  (``SUCCEEDED``, or ``FAILED`` for good).
* ``temporal_saga_compensation_duration`` (histogram, ms, ``outcome``).
* ``temporal_saga_needs_human_entered`` (counter): sagas that began to wait for a human.
* ``temporal_saga_needs_human_left`` (counter, ``how``): sagas that stopped waiting:
  ``resolved`` (operators retried or resolved every step), ``given_up``,
  ``timed_out`` (``human_timeout``), ``cancelled``.

Attempts are counted where the activities run, by ``SagaPlugin`` on the worker:
``temporal_saga_attempts`` (counter, ``kind`` step or compensation, ``outcome``
SUCCEEDED or FAILED), one per attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramTimedelta, MetricMeter

from ._state import SagaStatus, StepStatus

P = ParamSpec("P")


def _live(record: Callable[P, None]) -> Callable[P, None]:
    """Record only while the workflow runs live (not while it replays)."""

    @functools.wraps(record)
    def live(*args: P.args, **kwargs: P.kwargs) -> None:
        if not workflow.unsafe.is_replaying():
            record(*args, **kwargs)

    return live


class SagaMetrics:
    """The instruments of one saga run, each made when first used (most sagas use few).

    Nothing is made or recorded while the workflow replays: the SDK's meter would
    record nothing then anyway, and a worker replays every saga it takes over.
    """

    def __init__(self, saga: str) -> None:
        self._saga = saga

    @functools.cached_property
    def _meter(self) -> MetricMeter:
        return workflow.metric_meter().with_additional_attributes({"saga": self._saga})

    @functools.cached_property
    def _sagas(self) -> MetricCounter:
        return self._meter.create_counter(
            "temporal_saga_sagas", "Sagas that ended, by final status"
        )

    @functools.cached_property
    def _duration(self) -> MetricHistogramTimedelta:
        return self._meter.create_histogram_timedelta(
            "temporal_saga_duration", "A saga's time from start to end", "ms"
        )

    @functools.cached_property
    def _steps(self) -> MetricCounter:
        return self._meter.create_counter("temporal_saga_steps", "Saga steps that ended")

    @functools.cached_property
    def _compensations(self) -> MetricCounter:
        return self._meter.create_counter("temporal_saga_compensations", "Compensations that ended")

    @functools.cached_property
    def _compensation_duration(self) -> MetricHistogramTimedelta:
        return self._meter.create_histogram_timedelta(
            "temporal_saga_compensation_duration", "A compensation's time", "ms"
        )

    @functools.cached_property
    def _needs_human_entered(self) -> MetricCounter:
        return self._meter.create_counter(
            "temporal_saga_needs_human_entered", "Sagas that began to wait for a human"
        )

    @functools.cached_property
    def _needs_human_left(self) -> MetricCounter:
        return self._meter.create_counter(
            "temporal_saga_needs_human_left", "Sagas that stopped waiting for a human"
        )

    @_live
    def saga_ended(self, status: SagaStatus, took: timedelta) -> None:
        self._sagas.add(1, {"status": status.value})
        self._duration.record(took, {"status": status.value})

    @_live
    def step_ended(self, outcome: StepStatus) -> None:
        self._steps.add(1, {"outcome": outcome.value})

    @_live
    def compensation_ended(self, outcome: StepStatus, took: timedelta) -> None:
        self._compensations.add(1, {"outcome": outcome.value})
        self._compensation_duration.record(took, {"outcome": outcome.value})

    @_live
    def needs_human_entered(self) -> None:
        self._needs_human_entered.add(1)

    @_live
    def needs_human_left(self, how: str) -> None:
        self._needs_human_left.add(1, {"how": how})
