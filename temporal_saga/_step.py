"""A saga's step: its frozen definition, and the handle users hold.

:meth:`Saga.step` creates it; the scheduler (``_scheduler``) writes its progress
(``_progress``). Users hold it to declare dependencies (``after=[step]``), read
:attr:`Step.result`, and, in the imperative form, await it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from temporalio import workflow

from ._errors import NoResult, SagaDefinitionError, StepFailed
from ._nexus import NexusOperation
from ._options import ActivityOptions
from ._progress import StepProgress
from ._state import CompensationState, StepState, StepStatus
from ._versions import Patch, in_this_version

if TYPE_CHECKING:
    from ._events import EventWait

R = TypeVar("R")


class _Same(Enum):
    """Marker: the compensation takes the same argument as its step."""

    ARG = "ARG"


SAME_ARG = _Same.ARG

Activity = Callable[..., Any] | str | NexusOperation
"""An ``@activity.defn`` function (or method), an activity's registered name, a
workflow's ``@workflow.run`` method (run as a child workflow: a nested saga), or a
:class:`temporal_saga.nexus.NexusOperation` (another team's, behind a Nexus endpoint)."""


@dataclass(frozen=True, slots=True)
class StepDefinition:
    """What a step calls, with what, where and when: frozen once declared.

    Made by ``SagaDefinition.declare`` from the arguments of :meth:`Saga.step` (see
    there for each field's meaning), after every check.
    """

    index: int  # its place in definition order (its line in the trace)
    name: str
    label: str | None
    activity: Activity | None  # None: an event step (``event``)
    is_child: bool  # the activity is a workflow: the step is a nested saga
    arg: Any
    compensate: Activity | None
    compensate_is_child: bool
    compensate_arg: Any
    compensation_name: str
    compensate_on_failure: bool
    after: tuple[Step[Any] | str, ...]
    options: ActivityOptions
    compensation_options: ActivityOptions
    explicit_retry: bool  # the step sets its own retry_policy
    pivot: bool = False
    public_note: Callable[[Any], str] | None = None
    when: Callable[[], object] | None = None
    since: Patch | None = None
    until: Patch | None = None
    event: EventWait | None = None  # an event step waits for this instead of calling

    @property
    def shown(self) -> str:
        """What the trace and the Web UI show: the label, or the name."""
        return self.label or self.name

    @property
    def versioned(self) -> bool:
        """The step comes or goes with a code change (``since=``/``until=``)."""
        return self.since is not None or self.until is not None

    def in_this_version(self) -> bool:
        """Whether this saga runs the step (its ``since=``/``until=``); once, when due."""
        return in_this_version(self.since, self.until)


class Step(Generic[R]):
    """One step of a saga, as returned by :meth:`Saga.step`.

    Use it to declare dependencies (``after=[step]``) and, once it succeeded, to read
    its :attr:`result`. In an ``async with Saga(...)`` block, await it for its result.
    """

    # The definition (frozen), the progress (written by the scheduler) and the step's
    # place in the graph (written by the saga's definition as it links the steps).
    __slots__ = ("_after_pivot", "_definition", "_dependents", "_deps", "_progress")

    def __init__(self, definition: StepDefinition) -> None:
        self._definition = definition
        self._progress = StepProgress()
        # The steps this one waits for, and those that wait for it (lists made only
        # when there are some: most steps of a wide saga have neither, and every object
        # a saga keeps makes the worker's garbage collector work more).
        self._deps: list[Step[Any]] | tuple[()] = ()
        self._dependents: list[Step[Any]] | tuple[()] = ()
        self._after_pivot = False  # retried until it succeeds, never compensated

    def __await__(self) -> Generator[Any, None, R]:
        """In an ``async with Saga(...)`` block: wait for the step, return its result.

        Raises:
            StepFailed: The step failed (see :class:`StepFailed`).
            SagaDefinitionError: The step is not of an ``async with`` saga.
        """
        return self._wait().__await__()

    async def _wait(self) -> R:
        progress = self._progress
        if progress.task is None:
            raise SagaDefinitionError(
                f"step {self.name!r}: await a step only inside `async with Saga(...)`; "
                "with run(), read its .result once the saga ran"
            )
        # workflow.wait, not `await task`: a cancel of the waiting code must not cancel
        # the step (the saga decides what a cancel does to its steps).
        await workflow.wait([progress.task])
        progress.task.result()  # a determinism error: fail the workflow task
        if progress.on_awaited is not None:
            progress.on_awaited(self)
        if progress.outcome is StepStatus.SUCCEEDED:
            return progress.result  # type: ignore[no-any-return]
        if progress.outcome is StepStatus.SKIPPED:
            return None  # type: ignore[return-value]
        if progress.outcome is StepStatus.PENDING:  # it waited for a slot as the saga failed
            raise StepFailed(self.name, "never started: the saga failed")
        raise StepFailed(
            self.name, progress.error or progress.outcome.value, uncertain=progress.uncertain
        )

    def __repr__(self) -> str:
        return f"<Step {self.name!r} {self.status.value}>"

    @property
    def name(self) -> str:
        """The step's name, unique within its saga."""
        return self._definition.name

    @property
    def label(self) -> str | None:
        """The text the step shows instead of its name (``label=``), if any."""
        return self._definition.label

    @property
    def shown(self) -> str:
        """What the trace and the Web UI show for the step: its label, or its name."""
        return self._definition.shown

    @property
    def status(self) -> StepStatus:
        """Where the step is now (see :class:`StepStatus`)."""
        return self.state.status

    @property
    def outcome(self) -> StepStatus:
        """What the step itself did so far (see :attr:`StepState.outcome`)."""
        return self._progress.outcome

    @property
    def error(self) -> str | None:
        """The failure's message, if the step did not succeed."""
        return self._progress.error

    @property
    def note(self) -> str | None:
        """The public note on the step's result (``public_note=`` of :meth:`Saga.step`),
        or why a skipped step was skipped: ``condition not met`` (its ``when=``) or
        ``not in this saga's version`` (its ``since=`` or ``until=``)."""
        return self._progress.note

    @property
    def resolved(self) -> str | None:
        """The operator's note, if an operator resolved the step by hand."""
        return self._progress.resolved

    @property
    def compensation(self) -> CompensationState | None:
        """The compensation's progress, once it has started."""
        return self._progress.compensation

    @property
    def state(self) -> StepState:
        """A snapshot of the step."""
        return StepState.model_validate(self._state_fields())

    def _state_fields(self) -> dict[str, Any]:
        """The snapshot's fields (a saga validates all of its steps' at once)."""
        progress = self._progress
        return {
            "name": self._definition.name,
            "label": self._definition.label,
            "outcome": progress.outcome,
            "uncertain": progress.uncertain,
            "started_at": progress.started_at,
            "ended_at": progress.ended_at,
            "error": progress.error,
            "note": progress.note,
            "after_pivot": self._after_pivot,
            "nested_needs_human": list(progress.nested_needs_human),
            "resolved": progress.resolved,
            "compensation": progress.compensation,
            "after": [dep.name for dep in self._deps],
            "event": self._definition.event.event if self._definition.event else None,
        }

    @property
    def result(self) -> R:
        """The step's result (or the one an operator gave it, resolving it by hand).

        Raises:
            NoResult: The step has not succeeded (yet) (a ``RuntimeError``). A
                compensation whose ``compensate_arg`` reads the result of a step that
                timed out fails for good with this message: undo such steps by their
                own argument (the default) and ``idempotency_key()``.
        """
        progress = self._progress
        if progress.outcome is not StepStatus.SUCCEEDED and (
            progress.resolved is None or progress.result is None  # none given by hand
        ):
            why = progress.outcome.value
            if progress.error:
                why = f"{why}: {progress.error}"
            message = f"step {self.name!r} has no result (it is {why})"
            if progress.uncertain:
                message += (
                    "; its outcome is uncertain, so undo it by its own argument "
                    "(the default compensate_arg) and idempotency_key()"
                )
            raise NoResult(message)
        return progress.result  # type: ignore[no-any-return]

    def _needs_compensation(self) -> bool:
        """Whether the step has a compensation and took effect, or may have."""
        definition = self._definition
        return definition.compensate is not None and self._progress.needs_compensation(
            on_failure=definition.compensate_on_failure
        )
