"""temporal-saga: the saga pattern as a first-class thing on Temporal.

A saga is a set of named steps (activities) run in parallel as their dependencies
allow, each with a compensation that undoes it. If a step fails, everything that took
effect is compensated, in reverse dependency order, and the workflow fails with
:class:`SagaFailed`. See :class:`Saga`.
"""

from ._activity import idempotency_key
from ._audit import HistoryAudit, StoredPayload, audit_history
from ._client import connect
from ._codec import EncryptionCodec
from ._converter import data_converter
from ._declarative import DeclarativeSaga, OptionsSpec, SagaSpec, StepSpec
from ._errors import SagaDefinitionError, SagaFailed, SagaTypeError
from ._history import NotASaga, state_from_history
from ._options import ActivityOptions
from ._saga import SAGA_STATE_QUERY, SAGA_STATUS_ATTRIBUTE, SAME_ARG, Saga, Step
from ._state import (
    CompensationState,
    SagaResult,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from ._trace import render_trace
from ._watch import follow_trace, load_state, watch

__all__ = [
    "SAGA_STATE_QUERY",
    "SAGA_STATUS_ATTRIBUTE",
    "SAME_ARG",
    "ActivityOptions",
    "CompensationState",
    "DeclarativeSaga",
    "EncryptionCodec",
    "HistoryAudit",
    "NotASaga",
    "OptionsSpec",
    "Saga",
    "SagaDefinitionError",
    "SagaFailed",
    "SagaResult",
    "SagaSpec",
    "SagaState",
    "SagaStatus",
    "SagaTypeError",
    "Step",
    "StepSpec",
    "StepState",
    "StepStatus",
    "StoredPayload",
    "audit_history",
    "connect",
    "data_converter",
    "follow_trace",
    "idempotency_key",
    "load_state",
    "render_trace",
    "state_from_history",
    "watch",
]
