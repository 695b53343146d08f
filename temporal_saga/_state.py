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
    """Where the saga as a whole is.

    ``NEEDS_HUMAN``: a compensation failed for good (or a step after the pivot could
    not go on); the saga undid all it could and its workflow stays open, waiting for
    an operator to retry, resolve or give up (see ``Saga(human_timeout=...)``).
    ``COMPENSATION_FAILED``: the saga ended with steps still needing a human (given
    up, or no operator acted in time).

    ``INTERRUPTED`` is only ever seen in a state rebuilt from history: the workflow
    was terminated or timed out while the saga ran, so no code undid what took effect.
    """

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    NEEDS_HUMAN = "NEEDS_HUMAN"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    INTERRUPTED = "INTERRUPTED"


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


# Where a step may still be in effect, when nothing will undo it any more.
_LEFT_IN_EFFECT = (
    StepStatus.RUNNING,
    StepStatus.SUCCEEDED,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_FAILED,
)


class OperatorAction(BaseModel):
    """Something done to a saga while it waited for a human.

    Attributes:
        action: ``retry``, ``resolve`` or ``give up`` (an operator's Workflow
            Update), ``cancel`` (the workflow was cancelled while it waited) or
            ``time out`` (no operator acted within ``human_timeout``).
        step: The step acted on (retry, resolve).
        note: The operator's note (resolve, give up), or what a retry came to.
        by: Who did it, as the operator gave it (the CLI sends user@host).
        at: Workflow time of the action.
    """

    model_config = ConfigDict(frozen=True)

    action: str
    step: str | None = None
    note: str | None = None
    by: str | None = None
    at: datetime | None = None


class StepState(BaseModel):
    """One step of the saga.

    Attributes:
        name: The step's name: its identity within the saga (see ``Saga.step``).
        label: The text the step shows in the trace and the Web UI, when it is not
            its name (``label=`` of ``Saga.step``).
        outcome: What the step itself did: ``PENDING``, ``RUNNING``, ``SUCCEEDED``,
            ``FAILED``, ``CANCELLED`` or ``SKIPPED`` (never started).
        uncertain: True when the outcome is unknown (timed out, cancelled while
            running): the step may have taken effect, so it is compensated.
        error: The failure's message, for a step that did not succeed.
        note: The step's public note on its result (``public_note=``), or, for a step
            ``SKIPPED`` because its ``when=`` condition was false, ``condition not
            met``, or, while an event step waits, ``waiting for event 'NAME'``; shown
            in the trace. Only the live saga knows it: a state rebuilt
            from history has none.
        attempts: How many attempts the activity took. Only history records it, so
            it is known in a state rebuilt from history and None in the live query
            (workflow code cannot see attempts).
        after_pivot: The step comes after the saga's pivot: it is retried until it
            succeeds, never compensated.
        nested_needs_human: For a step that is a nested saga which failed and could
            not undo all of its own steps (it ended ``COMPENSATION_FAILED``): its
            steps that need a human. The step then needs a human too.
        resolved: The operator's note, once an operator resolved the step by hand
            (``saga_resolve``): it no longer needs a human.
        compensation: The compensation, once it has started.
        after: The steps it waited for: its ``after=``, or in the imperative form
            the steps whose ``await`` returned before it was added (what
            ``temporal-saga show --graph`` draws as arrows). Empty in a state rebuilt
            from the history of a saga that succeeded (history does not record it).
        event: For an event step (``Saga.event``), the event it waits for.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    label: str | None = None
    outcome: StepStatus
    uncertain: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int | None = None
    error: str | None = None
    note: str | None = None
    after_pivot: bool = False
    nested_needs_human: list[str] = []
    resolved: str | None = None
    compensation: CompensationState | None = None
    after: list[str] = []
    event: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> StepStatus:
        """The step's overall status: its outcome, or its compensation's once started."""
        if self.compensation is None:
            return self.outcome
        return _COMPENSATION_TO_STEP_STATUS[self.compensation.status]


def _stuck_after_pivot(step: StepState) -> bool:
    """In a saga that failed past its pivot: this later step has not done its part."""
    if not step.after_pivot:
        return False
    if step.outcome is StepStatus.SKIPPED:
        return step.note is None  # never ran because the saga failed
    return step.outcome is not StepStatus.SUCCEEDED


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
        omitted_steps: How many steps this snapshot leaves out. Only the state in a
            ``SagaFailed`` of a saga of more than 100 steps omits any (it keeps the
            failed step and those needing a human); the query and the state rebuilt
            from history list every step.
        actions: What operators (and timers, and cancels) did while the saga waited
            for a human, oldest first.
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
    omitted_steps: int = 0
    actions: list[OperatorAction] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def past_pivot(self) -> bool:
        """The pivot succeeded: from here on the saga only goes forward."""
        return any(s.name == self.pivot and s.outcome is StepStatus.SUCCEEDED for s in self.steps)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def needs_human(self) -> list[str]:
        """Steps someone must finish by hand: their compensation failed for good; the
        saga failed after the pivot (no way back) and they did not succeed, whether
        they failed or never ran (not those skipped by their own condition or
        version); they are a pivot of unknown outcome; they are a nested saga that
        could not undo itself; or the workflow was interrupted and they took effect
        (or may have) without being undone. A step an operator resolved is done."""
        interrupted = self.status is SagaStatus.INTERRUPTED
        forward_stuck = self.past_pivot and self.reason is not None  # once: O(steps)
        return [
            s.name
            for s in self.steps
            if s.resolved is None
            and (
                s.status is StepStatus.COMPENSATION_FAILED
                or (forward_stuck and _stuck_after_pivot(s))
                or (s.name == self.pivot and s.uncertain)
                or bool(s.nested_needs_human)
                or (
                    interrupted
                    and (s.status in _LEFT_IN_EFFECT or (s.uncertain and not s.compensation))
                )
            )
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


def bounded(state: SagaState, *, keep_all_up_to: int) -> SagaState:
    """The state a ``SagaFailed`` carries: every step up to ``keep_all_up_to`` steps;
    past that the failed step, the pivot and the steps that need a human (at most
    ``keep_all_up_to`` of them), so that a large saga's failure fits in a payload."""
    if len(state.steps) <= keep_all_up_to:
        return state
    keep = {state.failed_step, state.pivot, *state.needs_human[:keep_all_up_to]}
    kept = [s for s in state.steps if s.name in keep]
    return state.model_copy(update={"steps": kept, "omitted_steps": len(state.steps) - len(kept)})
