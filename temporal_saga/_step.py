"""A saga's step: what it calls, with what, and what came of it.

:meth:`Saga.step` creates it; the scheduler (``_saga``) fills in its progress. Users
hold it to declare dependencies (``after=[step]``) and read :attr:`Step.result`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from temporalio import workflow

from ._errors import NoResult, StepFailed
from ._options import ActivityOptions
from ._state import CompensationState, StepState, StepStatus
from ._versions import Patch, in_this_version

R = TypeVar("R")


class _Same(Enum):
    """Marker: the compensation takes the same argument as its step."""

    ARG = "ARG"


SAME_ARG = _Same.ARG

Activity = Callable[..., Any] | str
"""An ``@activity.defn`` function (or method), an activity's registered name, or a
workflow's ``@workflow.run`` method (run as a child workflow: a nested saga)."""


class Step(Generic[R]):
    """One step of a saga, as returned by :meth:`Saga.step`.

    Use it to declare dependencies (``after=[step]``) and, once it succeeded, to read
    its :attr:`result`.
    """

    # Slots: a saga of thousands of steps keeps no dict per step, and the garbage
    # collector has fewer objects to go through while sagas run.
    __slots__ = (
        "_activity",
        "_after",
        "_after_pivot",
        "_arg",
        "_args",
        "_compensate",
        "_compensate_arg",
        "_compensate_is_child",
        "_compensate_on_failure",
        "_compensation",
        "_compensation_name",
        "_compensation_options",
        "_dependents",
        "_deps",
        "_ended_at",
        "_error",
        "_explicit_retry",
        "_finished",
        "_index",
        "_is_child",
        "_label",
        "_name",
        "_nested_needs_human",
        "_note",
        "_on_awaited",
        "_options",
        "_outcome",
        "_public_note",
        "_resolved",
        "_result",
        "_since",
        "_started_at",
        "_task",
        "_uncertain",
        "_until",
        "_when",
    )

    def __init__(
        self,
        *,
        index: int,
        name: str,
        label: str | None = None,
        activity: Activity,
        is_child: bool,
        arg: Any,
        compensate: Activity | None,
        compensate_is_child: bool,
        compensate_arg: Any,
        compensation_name: str,
        compensate_on_failure: bool,
        after: Sequence[Step[Any] | str],
        options: ActivityOptions,
        compensation_options: ActivityOptions,
        public_note: Callable[[Any], str] | None,
        when: Callable[[], object] | None = None,
        since: Patch | None = None,
        until: Patch | None = None,
    ) -> None:
        self._index = index
        self._name = name
        self._label = label
        self._activity = activity
        self._is_child = is_child
        self._arg = arg
        self._compensate = compensate
        self._compensate_is_child = compensate_is_child
        self._compensate_arg = compensate_arg
        self._compensation_name = compensation_name
        self._compensate_on_failure = compensate_on_failure
        self._after = after
        self._options = options
        self._compensation_options = compensation_options
        self._public_note = public_note
        self._when = when
        self._since = since
        self._until = until
        # Resolved by Saga.run: the steps this one waits for, and those that wait for it
        # (lists made only when there are some: most steps of a wide saga have neither,
        # and every object a saga keeps makes the worker's garbage collector work more).
        self._deps: list[Step[Any]] | tuple[()] = ()
        self._dependents: list[Step[Any]] | tuple[()] = ()
        # Progress.
        self._outcome = StepStatus.PENDING
        self._uncertain = False
        self._started_at: datetime | None = None
        self._ended_at: datetime | None = None
        self._error: str | None = None
        self._note: str | None = None
        self._args: Sequence[Any] = ()
        self._result: Any = None
        self._finished: int | None = None
        self._compensation: CompensationState | None = None
        self._explicit_retry = False
        self._after_pivot = False
        self._nested_needs_human: Sequence[str] = ()
        self._resolved: str | None = None  # an operator's note: finished by hand
        # The imperative form (``async with Saga(...)``): the task running the step, and
        # the saga's callback for when an ``await`` of the step returns.
        self._task: asyncio.Task[None] | None = None
        self._on_awaited: Callable[[Step[Any]], None] | None = None

    def __await__(self) -> Generator[Any, None, R]:
        """In an ``async with Saga(...)`` block: wait for the step, return its result.

        Raises:
            StepFailed: The step failed (see :class:`StepFailed`).
        """
        return self._wait().__await__()

    async def _wait(self) -> R:
        if self._task is None:
            raise RuntimeError(
                f"step {self._name!r}: await a step only inside `async with Saga(...)`; "
                "with run(), read its .result once the saga ran"
            )
        # workflow.wait, not `await task`: a cancel of the waiting code must not cancel
        # the step (the saga decides what a cancel does to its steps).
        await workflow.wait([self._task])
        self._task.result()  # a determinism error: fail the workflow task
        if self._on_awaited is not None:
            self._on_awaited(self)
        if self._outcome is StepStatus.SUCCEEDED:
            return self._result  # type: ignore[no-any-return]
        if self._outcome is StepStatus.SKIPPED:
            return None  # type: ignore[return-value]
        if self._outcome is StepStatus.PENDING:  # it waited for a slot as the saga failed
            raise StepFailed(self._name, "never started: the saga failed")
        raise StepFailed(self._name, self._error or self._outcome.value, uncertain=self._uncertain)

    def __repr__(self) -> str:
        return f"<Step {self._name!r} {self.status.value}>"

    @property
    def name(self) -> str:
        """The step's name, unique within its saga."""
        return self._name

    @property
    def label(self) -> str | None:
        """The text the step shows instead of its name (``label=``), if any."""
        return self._label

    @property
    def shown(self) -> str:
        """What the trace and the Web UI show for the step: its label, or its name."""
        return self._label or self._name

    @property
    def status(self) -> StepStatus:
        """Where the step is now (see :class:`StepStatus`)."""
        return self.state.status

    @property
    def outcome(self) -> StepStatus:
        """What the step itself did so far (see :attr:`StepState.outcome`)."""
        return self._outcome

    @property
    def error(self) -> str | None:
        """The failure's message, if the step did not succeed."""
        return self._error

    @property
    def note(self) -> str | None:
        """The public note on the step's result (``public_note=`` of :meth:`Saga.step`),
        or why a skipped step was skipped: ``condition not met`` (its ``when=``) or
        ``not in this saga's version`` (its ``since=`` or ``until=``)."""
        return self._note

    @property
    def resolved(self) -> str | None:
        """The operator's note, if an operator resolved the step by hand."""
        return self._resolved

    @property
    def compensation(self) -> CompensationState | None:
        """The compensation's progress, once it has started."""
        return self._compensation

    @property
    def state(self) -> StepState:
        """A snapshot of the step."""
        return StepState(
            name=self._name,
            label=self._label,
            outcome=self._outcome,
            uncertain=self._uncertain,
            started_at=self._started_at,
            ended_at=self._ended_at,
            error=self._error,
            note=self._note,
            after_pivot=self._after_pivot,
            nested_needs_human=list(self._nested_needs_human),
            resolved=self._resolved,
            compensation=self._compensation,
        )

    @property
    def result(self) -> R:
        """The step's result.

        Raises:
            RuntimeError: The step has not succeeded (yet). A compensation whose
                ``compensate_arg`` reads the result of a step that timed out fails
                for good with this message: undo such steps by their own argument
                (the default) and ``idempotency_key()``.
        """
        if self._outcome is not StepStatus.SUCCEEDED:
            why = f"{self._outcome.value}: {self._error}" if self._error else self._outcome.value
            message = f"step {self._name!r} has no result (it is {why})"
            if self._uncertain:
                message += (
                    "; its outcome is uncertain, so undo it by its own argument "
                    "(the default compensate_arg) and idempotency_key()"
                )
            raise NoResult(message)
        return self._result  # type: ignore[no-any-return]

    def _in_this_version(self) -> bool:
        return in_this_version(self._since, self._until)

    def _needs_compensation(self) -> bool:
        if self._compensate is None:
            return False
        return (
            self._outcome is StepStatus.SUCCEEDED
            or self._uncertain
            or (self._outcome is StepStatus.FAILED and self._compensate_on_failure)
        )
