"""temporal-saga: the saga pattern as a first-class thing on Temporal.

A saga is a set of named steps (activities, nested sagas, or other teams' Nexus
operations) run in parallel as their dependencies allow, each with a compensation that
undoes it. If a step fails, everything that took effect is compensated, in reverse
dependency order, and the workflow fails with :class:`SagaFailed`. See :class:`Saga`.

The package is laid out by where code runs:

* ``temporal_saga`` (this namespace): the engine, which runs inside workflows. It is
  sandbox-safe and light: importing it loads neither the client tooling nor
  cryptography nor an HTTP server.
* :mod:`temporal_saga.nexus`: ``NexusOperation``, another team's Nexus operation as a
  step or a compensation (workflow code).
* :mod:`temporal_saga.declarative`: sagas defined as data (JSON), run by a generic
  workflow.
* :mod:`temporal_saga.client`: everything outside workflows: ``connect``, the data
  converter for workers and clients, reading a saga's state and trace, the CLI.
* :mod:`temporal_saga.encryption` (the ``temporal-saga[encryption]`` extra): the
  payload codec, the codec server for the Web UI, the audit of stored payloads.
* :mod:`temporal_saga.testing` (the ``temporal-saga[testing]`` extra): test your own
  sagas: a ready server (time-skipping too), fake activities with failures injected,
  outcomes to assert on, replay, an opt-in pytest plugin.
"""

from ._errors import (
    NoResult,
    SagaDefinitionError,
    SagaError,
    SagaFailed,
    SagaTypeError,
    StepFailed,
)
from ._protocol import idempotency_key
from ._saga import Saga
from ._state import SagaResult, SagaState, SagaStatus, StepState, StepStatus
from ._step import Step
from ._versions import deprecated_patch

__all__ = [
    "NoResult",
    "Saga",
    "SagaDefinitionError",
    "SagaError",
    "SagaFailed",
    "SagaResult",
    "SagaState",
    "SagaStatus",
    "SagaTypeError",
    "Step",
    "StepFailed",
    "StepState",
    "StepStatus",
    "deprecated_patch",
    "idempotency_key",
]
