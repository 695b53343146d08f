"""The saga's state as users see it: the ``saga_state`` query, ``SagaFailed`` details.

These are pydantic models so that they cross the wire with the pydantic data converter
and can be read back by any client. The engine keeps its own bookkeeping in
:class:`temporal_saga.Step`; these values are snapshots built from it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field


class SagaStatus(StrEnum):
    """Where the saga as a whole is."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class StepStatus(StrEnum):
    """Where one step is; the last three describe its compensation."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class CompensationState(BaseModel):
    """One compensation: its own name, progress and outcome.

    ``status`` is ``RUNNING``, ``SUCCEEDED`` or ``FAILED`` (failed for good); ``order``
    counts the compensations in the order they started, from 0.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    status: StepStatus
    order: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int | None = None
    error: str | None = None


_COMPENSATION_TO_STEP_STATUS = {
    StepStatus.RUNNING: StepStatus.COMPENSATING,
    StepStatus.SUCCEEDED: StepStatus.COMPENSATED,
    StepStatus.FAILED: StepStatus.COMPENSATION_FAILED,
}


_NOT_DONE = (StepStatus.FAILED, StepStatus.CANCELLED)


class StepState(BaseModel):
    """One step of the saga.

    Attributes:
        name: The step's name.
        outcome: What the step itself did: ``PENDING``, ``RUNNING``, ``SUCCEEDED``,
            ``FAILED``, ``CANCELLED`` or ``SKIPPED`` (never started).
        uncertain: True when the outcome is unknown (timed out, cancelled while
            running): the step may have taken effect, so it is compensated.
        error: The failure's message, for a step that did not succeed.
        note: The step's public note on its result (``public_note=``), shown in the
            trace. Only the live saga knows it: a state rebuilt from history has none.
        attempts: How many attempts the activity took. Only history records it, so
            it is known in a state rebuilt from history and None in the live query
            (workflow code cannot see attempts).
        after_pivot: The step comes after the saga's pivot: it is retried until it
            succeeds, never compensated.
        compensation: The compensation, once it has started.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    outcome: StepStatus
    uncertain: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int | None = None
    error: str | None = None
    note: str | None = None
    after_pivot: bool = False
    compensation: CompensationState | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> StepStatus:
        """The step's overall status: its outcome, or its compensation's once started."""
        if self.compensation is None:
            return self.outcome
        return _COMPENSATION_TO_STEP_STATUS[self.compensation.status]


class SagaState(BaseModel):
    """A snapshot of a saga: the answer to the ``saga_state`` query.

    Attributes:
        name: The saga's name.
        status: Where the saga as a whole is.
        steps: Every step, in definition order.
        failed_step: The step whose failure started the compensation (None when the
            saga succeeded, or was cancelled or timed out).
        pivot: The name of the saga's pivot step, if it has one.
        reason: Why the saga is being (or was) compensated.
        started_at: Workflow time when the saga started.
        ended_at: Workflow time when the saga ended.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    status: SagaStatus
    steps: list[StepState]
    failed_step: str | None = None
    reason: str | None = None
    pivot: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def past_pivot(self) -> bool:
        """The pivot succeeded: from here on the saga only goes forward."""
        return any(s.name == self.pivot and s.outcome is StepStatus.SUCCEEDED for s in self.steps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def needs_human(self) -> list[str]:
        """Steps someone must finish by hand: their compensation failed for good, they
        failed after the pivot (no way back), or they are a pivot of unknown outcome."""
        past_pivot = self.past_pivot
        return [
            s.name
            for s in self.steps
            if s.status is StepStatus.COMPENSATION_FAILED
            or (past_pivot and s.after_pivot and s.outcome in _NOT_DONE)
            or (s.name == self.pivot and s.uncertain)
        ]

    def step(self, name: str) -> StepState:
        """The state of the step called ``name`` (``KeyError`` if there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class SagaResult(BaseModel):
    """What :meth:`temporal_saga.Saga.run` returns when every step succeeded.

    Attributes:
        state: The final state (status ``SUCCEEDED``).
        results: Each step's result, by step name.
    """

    model_config = ConfigDict(frozen=True)

    state: SagaState
    results: dict[str, Any]
