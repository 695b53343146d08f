"""What happened so far: a step's progress, and the saga's.

Definitions are frozen (``_step.StepDefinition``, ``_definition.SagaDefinition``);
everything that changes while a saga runs lives here. Only the scheduler writes a
step's progress; the saga's is written as :class:`SagaProgress` says. The publisher
reads both to publish them; the operator desk reads them, and records the operators'
actions through the publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._state import CompensationState, OperatorAction, SagaStatus, StepStatus

if TYPE_CHECKING:
    from ._step import Step


class StepProgress:
    """What happened to one step, written by the scheduler alone."""

    # Slots: a saga of thousands of steps keeps no dict per step, and the garbage
    # collector has fewer objects to go through while sagas run.
    __slots__ = (
        "args",
        "compensation",
        "ended_at",
        "error",
        "finished",
        "nested_needs_human",
        "new_arg",
        "note",
        "on_awaited",
        "outcome",
        "resolved",
        "result",
        "started_at",
        "task",
        "uncertain",
    )

    def __init__(self) -> None:
        self.outcome = StepStatus.PENDING
        self.uncertain = False  # it may have taken effect: compensate it
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.error: str | None = None
        self.note: str | None = None  # public note, or why it was skipped
        self.args: Sequence[Any] = ()  # what it was called with (its undo's default)
        self.result: Any = None
        self.finished: int | None = None  # its place among the steps that finished
        self.compensation: CompensationState | None = None
        self.nested_needs_human: Sequence[str] = ()
        self.resolved: str | None = None  # an operator's note: finished by hand
        # An operator's retry with a new argument: (arg,), replacing the definition's.
        self.new_arg: tuple[Any] | None = None
        # The imperative form: the task running the step, and the scheduler's callback
        # for when an ``await`` of the step returns.
        self.task: asyncio.Task[None] | None = None
        self.on_awaited: Callable[[Step[Any]], None] | None = None

    def needs_compensation(self, *, on_failure: bool) -> bool:
        """Whether the step took effect, or may have (``on_failure``: a step declared
        ``compensate_on_failure`` counts a failure as an effect)."""
        return (
            self.outcome is StepStatus.SUCCEEDED
            or self.uncertain
            or (on_failure and self.outcome is StepStatus.FAILED)
        )


class SagaProgress:
    """What happened to the saga as a whole: its status, why it failed, what operators
    did. The saga and its scheduler record the failure (:meth:`fail`); the publisher
    writes the status, the times and the operators' actions as it publishes them."""

    __slots__ = (
        "actions",
        "cancel_requested",
        "ended_at",
        "failed_step",
        "reason",
        "started_at",
        "status",
    )

    def __init__(self) -> None:
        self.status = SagaStatus.RUNNING
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.failed_step: Step[Any] | None = None
        self.reason: str | None = None  # set once: the first failure is the saga's
        self.actions: tuple[OperatorAction, ...] = ()
        self.cancel_requested = False  # the workflow was cancelled as the saga wound down

    def fail(self, step: Step[Any] | None, reason: str) -> None:
        """Record the saga's failure (only the first counts)."""
        if self.reason is None:
            self.failed_step = step
            self.reason = reason
