"""The saga engine: ``Saga`` holds the steps, ``run`` executes and, if need be, undoes them.

Everything here runs inside a workflow, so it stays deterministic: workflow time,
``workflow.wait`` instead of ``asyncio.wait``, tasks created in a fixed order, and
``graphlib`` (whose ready order is insertion order) for the DAG.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from enum import Enum
from graphlib import CycleError, TopologicalSorter
from typing import Any, Generic, NamedTuple, TypeVar, Unpack, overload

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    TerminatedError,
    TimeoutError,
)

from ._activity import COMPENSATION_SUFFIX, saga_run_id, step_activity_id
from ._converter import PublicText
from ._errors import SagaDefinitionError, SagaFailed, SagaTypeError
from ._options import (
    COMPENSATION_DEFAULTS,
    STEP_DEFAULTS,
    ActivityOptions,
    check_options,
    merge,
)
from ._state import (
    CompensationState,
    SagaResult,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from ._trace import assemble_trace, compensation_line, step_line

R = TypeVar("R")

#: Name of the query that returns a running (or closed) saga's :class:`SagaState`.
SAGA_STATE_QUERY = "saga_state"

#: The Keyword search attribute a saga keeps its status in, with ``search_attributes=True``.
#: Register it first: ``temporal operator search-attribute create --name SagaStatus
#: --type Keyword`` (or ``temporal server start-dev --search-attribute SagaStatus=Keyword``).
SAGA_STATUS_ATTRIBUTE = SearchAttributeKey.for_keyword("SagaStatus")

#: Steps (and compensations) in flight at once unless ``max_parallelism`` says otherwise.
#: Each wave of starts happens in one workflow activation, which the Python SDK must
#: finish within 2 s (its deadlock detector); scheduling one activity with its summary
#: costs about 2 ms of that on a small machine, so 500 starts leave room.
DEFAULT_MAX_PARALLELISM = 500
#: Past this many history events, at most LARGE_HISTORY_PARALLELISM steps are in flight
#: (see Saga._parallelism).
LARGE_HISTORY_EVENTS = 2000
LARGE_HISTORY_PARALLELISM = 40
#: Temporal's default limit of pending activities per workflow
#: (``limit.numPendingActivities.error``); more would fail the workflow task forever.
PENDING_ACTIVITY_LIMIT = 2000
#: Temporal's default history limits (``limit.historyCount.error``, ``limit.historySize.error``).
HISTORY_EVENT_LIMIT = 51_200
HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
#: History events per activity: 3 of its own (scheduled, started, closed), and up to 3
#: more when its completion has a workflow task to itself.
EVENTS_PER_STEP_FLOOR = 3
EVENTS_PER_STEP_WORST_CASE = 6
#: A ``SagaFailed`` carries every step's state up to this many steps (see _failure_state).
FULL_STATE_STEPS = 100

HISTORY_FULL = "saga stopped before outgrowing Temporal's history limit; split it into nested sagas"

# How many sagas of each name have run in each workflow run, keyed by the workflow
# instance: a replay makes a new instance, so it counts from 1 again (deterministic).
_RUNS: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()


def _next_run_number(saga: str) -> int:
    """Number this run of the saga called ``saga`` in the current workflow run (from 1)."""
    runs = _RUNS.setdefault(workflow.instance(), Counter())
    runs[saga] += 1
    return runs[saga]


class _NoResult(RuntimeError):
    """``Step.result`` of a step that has not succeeded."""


class _Same(Enum):
    """Marker: the compensation takes the same argument as its step."""

    ARG = "ARG"


SAME_ARG = _Same.ARG

Activity = Callable[..., Any] | str
"""An ``@activity.defn`` function (or method), an activity's registered name, or a
workflow's ``@workflow.run`` method (run as a child workflow: a nested saga)."""


def _is_child_workflow(fn: Activity, where: str) -> bool:
    """Check ``fn`` is an activity or a workflow; True for a workflow."""
    if isinstance(fn, str):
        if not fn:
            raise SagaDefinitionError(f"{where}: an activity name cannot be empty")
        return False
    if not callable(fn):
        raise SagaTypeError(f"{where}: expected an activity, got {type(fn).__name__} {fn!r}")
    if workflow._Definition.from_run_fn(fn) is not None:
        return True
    definition = activity._Definition.from_callable(fn)
    if definition is None:
        raise SagaTypeError(
            f"{where}: {getattr(fn, '__qualname__', fn)!r} is not an activity; "
            "decorate it with @activity.defn"
        )
    if definition.name is None:
        raise SagaTypeError(f"{where}: a dynamic activity cannot be called by a saga step")
    return False


async def _invoke(
    fn: Activity, child: bool, args: list[Any], *, name: str, ident: str, options: ActivityOptions
) -> Any:
    """Run one step or compensation: an activity, or a child workflow (a nested saga)."""
    if child:
        # A child saga compensates itself when it fails; waiting for its cancellation
        # to complete keeps that true when the parent cancels it.
        return await workflow.execute_child_workflow(
            fn,
            args=args,
            id=f"{workflow.info().workflow_id}/{ident}",
            task_queue=options.get("task_queue"),
            static_summary=PublicText(name),
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
    return await workflow.start_activity(
        fn, args=args, summary=PublicText(name), activity_id=ident, **options
    )


class _Outcome(NamedTuple):
    """How a step (or compensation) that did not succeed ended."""

    status: StepStatus
    uncertain: bool  # it may have taken effect: compensate it
    message: str
    nested_needs_human: list[str]  # a nested saga's steps that it could not undo


def _describe(error: BaseException) -> _Outcome:
    """Classify a step's failure."""
    cause = error.cause if isinstance(error, ActivityError | ChildWorkflowError) else error
    if isinstance(cause, TimeoutError):
        kind = cause.type.name if cause.type is not None else "unknown"
        return _Outcome(StepStatus.FAILED, True, f"timed out ({kind})", [])
    if isinstance(cause, CancelledError | asyncio.CancelledError):
        return _Outcome(StepStatus.CANCELLED, True, "cancelled", [])
    if isinstance(cause, TerminatedError):
        # A terminated child never undid itself.
        return _Outcome(StepStatus.FAILED, True, "terminated", [])
    if isinstance(cause, FailureError):
        nested = SagaFailed.from_error(cause) if isinstance(error, ChildWorkflowError) else None
        stuck = nested.needs_human if nested is not None else []
        return _Outcome(StepStatus.FAILED, False, cause.message, stuck)
    return _Outcome(StepStatus.FAILED, False, f"{type(cause).__name__}: {cause}", [])


def _task_queue_of(options: ActivityOptions) -> ActivityOptions:
    return {"task_queue": options["task_queue"]} if "task_queue" in options else {}


def _reachable(start: Step[Any], direction: str) -> set[Step[Any]]:
    """The steps reachable from ``start`` along ``_deps`` or ``_dependents``."""
    seen: set[Step[Any]] = set()
    todo = list(getattr(start, direction))
    while todo:
        step = todo.pop()
        if step not in seen:
            seen.add(step)
            todo.extend(getattr(step, direction))
    return seen


def _build_args(arg: Any) -> list[Any]:
    """A step's or compensation's arguments; a callable ``arg`` is called now.

    A callable that fails makes the step (or compensation) fail for good, except for
    a sandbox or determinism error: that is a bug in workflow code, so it fails the
    workflow task (retried until a fixed worker runs it), never counted as the
    business failure that would start undoing the saga.
    """
    try:
        value = arg() if callable(arg) else arg
    except workflow.NondeterminismError:
        raise
    except _NoResult as err:
        raise ApplicationError(f"could not build its argument: {err}", non_retryable=True) from None
    except Exception as err:
        # The message is public (the trace shows it); the error's text may quote saga
        # data, so it goes to the details, which are encrypted.
        raise ApplicationError(
            f"could not build its argument: {type(err).__name__}", repr(err), non_retryable=True
        ) from None
    return [] if value is None else [value]


class Step(Generic[R]):
    """One step of a saga, as returned by :meth:`Saga.step`.

    Use it to declare dependencies (``after=[step]``) and, once it succeeded, to read
    its :attr:`result`.
    """

    def __init__(
        self,
        *,
        index: int,
        name: str,
        activity: Activity,
        is_child: bool,
        arg: Any,
        compensate: Activity | None,
        compensate_is_child: bool,
        compensate_arg: Any,
        compensation_name: str,
        compensate_on_failure: bool,
        after: list[Step[Any] | str],
        options: ActivityOptions,
        compensation_options: ActivityOptions,
        public_note: Callable[[Any], str] | None,
    ) -> None:
        self._index = index
        self._name = name
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
        # Resolved by Saga.run: the steps this one waits for, and those that wait for it.
        self._deps: list[Step[Any]] = []
        self._dependents: list[Step[Any]] = []
        # Progress.
        self._outcome = StepStatus.PENDING
        self._uncertain = False
        self._started_at: datetime | None = None
        self._ended_at: datetime | None = None
        self._error: str | None = None
        self._note: str | None = None
        self._args: list[Any] = []
        self._result: Any = None
        self._finished: int | None = None
        self._compensation: CompensationState | None = None
        self._explicit_retry = False
        self._after_pivot = False
        self._nested_needs_human: list[str] = []

    def __repr__(self) -> str:
        return f"<Step {self._name!r} {self.status.value}>"

    @property
    def name(self) -> str:
        """The step's name, unique within its saga."""
        return self._name

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
        """The public note on the step's result (``public_note=`` of :meth:`Saga.step`)."""
        return self._note

    @property
    def state(self) -> StepState:
        """A snapshot of the step."""
        return StepState(
            name=self._name,
            outcome=self._outcome,
            uncertain=self._uncertain,
            started_at=self._started_at,
            ended_at=self._ended_at,
            error=self._error,
            note=self._note,
            after_pivot=self._after_pivot,
            nested_needs_human=self._nested_needs_human,
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
            raise _NoResult(message)
        return self._result  # type: ignore[no-any-return]

    def _needs_compensation(self) -> bool:
        if self._compensate is None:
            return False
        return (
            self._outcome is StepStatus.SUCCEEDED
            or self._uncertain
            or (self._outcome is StepStatus.FAILED and self._compensate_on_failure)
        )


class Saga:
    """A saga: named steps with compensations, run as one Temporal workflow.

    Create it inside a workflow's run method, add steps with :meth:`step`, then
    ``await saga.run()``. Steps whose dependencies succeeded start at once, so
    independent steps run in parallel. If a step fails, no new step starts, the
    steps in flight are waited for (or cancelled, with ``cancel_in_flight=True``),
    and every step that took effect, or may have, is undone by its compensation in
    reverse dependency order; then ``run`` raises :class:`SagaFailed`.

    Args:
        name: The saga's name, shown in its trace.
        parallel_compensation: Run independent compensations at once (default).
            With False they run one by one, in reverse order of completion.
        cancel_in_flight: On failure, cancel the steps still running instead of
            waiting for them; their outcome is then uncertain, so they are compensated.
        timeout: Fail and compensate the saga if it has not succeeded by then
            (measured from ``run``; costs one timer in the history).
        max_parallelism: Run at most this many steps (and, when undoing, at most
            this many compensations) at once: default 500, at most 2,000, which is
            Temporal's default limit of pending activities per workflow. Above about
            1,000, one workflow activation may take longer than the 2 s the Python
            SDK allows it. Once the workflow's history passes 2,000 events, at most
            40 run at once, so that the server never has to restart a workflow
            task of a long history (it does when more than 100 events arrive
            while one runs).
        search_attributes: Keep the saga's status in the ``SagaStatus`` Keyword
            search attribute, so ``temporal workflow list --query
            'SagaStatus="COMPENSATION_FAILED"'`` finds the sagas that need a human.
            Each status change costs one history event; the attribute must be
            registered on the namespace.
        compensation_options: Activity options for every compensation of this saga.
        **activity_options: Activity options for every step of this saga (see
            :class:`ActivityOptions`).

    Example::

        saga = Saga("buy trip package")
        plane = saga.step("book plane ticket", book_flight, trip.flight,
                          compensate=cancel_flight)
        hotel = saga.step("book hotel room", book_hotel, trip.hotel,
                          compensate=cancel_hotel)
        await saga.run()
        return Booking(plane=plane.result, hotel=hotel.result)
    """

    def __init__(
        self,
        name: str,
        *,
        parallel_compensation: bool = True,
        cancel_in_flight: bool = False,
        timeout: timedelta | None = None,
        max_parallelism: int | None = None,
        search_attributes: bool = False,
        compensation_options: ActivityOptions | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> None:
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError("a saga needs a non-empty name")
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta()):
            raise SagaDefinitionError(f"saga {name!r}: timeout must be a positive timedelta")
        self._name = name
        self._parallel_compensation = parallel_compensation
        self._cancel_in_flight = cancel_in_flight
        if max_parallelism is not None and (
            not isinstance(max_parallelism, int)
            or not 1 <= max_parallelism <= PENDING_ACTIVITY_LIMIT
        ):
            raise SagaDefinitionError(
                f"saga {name!r}: max_parallelism must be from 1 to {PENDING_ACTIVITY_LIMIT} "
                "(Temporal's default limit of pending activities per workflow), "
                f"not {max_parallelism!r}"
            )
        self._timeout = timeout
        self._max_parallelism = max_parallelism or DEFAULT_MAX_PARALLELISM
        self._search_attributes = search_attributes
        self._options = merge(STEP_DEFAULTS, check_options(activity_options, f"saga {name!r}"))
        # A compensation runs where its step runs unless compensation options say
        # otherwise: the service that did it undoes it.
        self._compensation_options = merge(
            COMPENSATION_DEFAULTS,
            _task_queue_of(self._options),
            check_options(compensation_options or {}, f"saga {name!r} compensations"),
        )
        self._steps: dict[str, Step[Any]] = {}
        self._pivot: Step[Any] | None = None
        self._status = SagaStatus.RUNNING
        self._started = False
        self._started_at: datetime | None = None
        self._ended_at: datetime | None = None
        self._failed_step: Step[Any] | None = None
        self._reason: str | None = None
        self._running: dict[asyncio.Task[None], Step[Any]] = {}
        self._run_id = ""  # this run's part of every activity id (see _activity)
        self._undoable = 0  # steps started that have a compensation
        self._history_at_start = (0, 0)  # history length and size when run() began
        # The live trace's lines, kept up to date step by step (see _publish).
        self._step_lines: list[str] = []
        self._compensation_lines: list[str] = []
        self._flush_pending = False
        self._finished_count = 0
        self._compensation_count = 0

    @property
    def name(self) -> str:
        """The saga's name."""
        return self._name

    @property
    def _pivot_name(self) -> str | None:
        return self._pivot.name if self._pivot else None

    @property
    def _past_pivot(self) -> bool:
        return self._pivot is not None and self._pivot._outcome is StepStatus.SUCCEEDED

    @property
    def pivot_uncertain(self) -> bool:
        """The pivot's outcome is unknown: it may have taken effect, and cannot be undone."""
        return self._pivot is not None and self._pivot._uncertain

    @property
    def steps(self) -> list[Step[Any]]:
        """The steps, in definition order."""
        return list(self._steps.values())

    @property
    def state(self) -> SagaState:
        """A snapshot of the saga; also the answer to the ``saga_state`` query."""
        return SagaState(
            name=self._name,
            status=self._status,
            steps=[step.state for step in self._steps.values()],
            failed_step=self._failed_step.name if self._failed_step else None,
            reason=self._reason,
            pivot=self._pivot_name,
            started_at=self._started_at,
            ended_at=self._ended_at,
        )

    @overload
    def step(
        self,
        name: str,
        activity: Callable[..., Awaitable[R]],
        arg: Any = None,
        *,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        compensation_options: ActivityOptions | None = None,
        public_note: Callable[[R], str] | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> Step[R]: ...

    @overload
    def step(
        self,
        name: str,
        activity: Callable[..., R],
        arg: Any = None,
        *,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        compensation_options: ActivityOptions | None = None,
        public_note: Callable[[R], str] | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> Step[R]: ...

    @overload
    def step(
        self,
        name: str,
        activity: str,
        arg: Any = None,
        *,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        compensation_options: ActivityOptions | None = None,
        public_note: Callable[[Any], str] | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> Step[Any]: ...

    def step(
        self,
        name: str,
        activity: Activity,
        arg: Any = None,
        *,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        compensation_options: ActivityOptions | None = None,
        public_note: Callable[[Any], str] | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> Step[Any]:
        """Add a step: one activity call, with an optional compensation.

        Args:
            name: Unique within the saga; the activity's summary in the Web UI.
                Public text, readable without the encryption key: keep personal
                data out of it.
            activity: The ``@activity.defn`` function, an activity's name, or a
                workflow's ``@workflow.run`` method: the step is then a child
                workflow (a nested saga, which compensates itself if it fails).
            arg: The activity's single argument. A zero-argument callable is
                called when the step starts (after its dependencies), so it can
                read their results: ``lambda: Req(date=plane.result.arrival)``.
                None calls the activity without arguments.
            compensate: The activity that undoes this step. It must be idempotent
                and succeed when there is nothing to undo.
            compensate_arg: The compensation's argument: by default the step's own
                (known even when the step's outcome is not); else a value, or a
                zero-argument callable called when the compensation starts.
            compensation_name: Name of the compensation in traces and the Web UI
                (default ``"undo <name>"``); public text, like ``name``.
            compensate_on_failure: Also compensate the step when it failed with an
                application error (by default such a step is assumed to have had
                no effect).
            pivot: This step is the point of no return. Every other step must come
                before it (be among its dependencies, recursively) or after it
                (depend on it). A failure before the pivot succeeded is undone
                backwards; once it succeeded, the steps after it are retried until
                they succeed (unlimited attempts unless the step sets its own
                ``retry_policy``), so they cannot declare compensations, and the
                pivot itself cannot have one.
            after: Steps (or step names) that must succeed before this one starts.
            compensation_options: Activity options for this step's compensation,
                over the saga's ``compensation_options``.
            public_note: Opt in to showing something of the step's result in the
                trace, which is public text (readable without the encryption key):
                called with the result when the step succeeds, its text follows the
                step's name, ``✔️ book plane ticket (FL-0042)``. By default no
                payload content reaches the trace. A note that raises shows only
                the exception's type.
            **activity_options: Activity options for this step, over the saga's.

        Returns:
            The step, whose :attr:`Step.result` is set once it succeeded.

        Raises:
            SagaDefinitionError: A duplicate name, a step of another saga, a bad
                option (a ``ValueError``).
            TypeError: Something that is not an activity where one belongs.
        """
        if self._started:
            raise SagaDefinitionError(f"saga {self._name!r}: cannot add a step once it runs")
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError(f"saga {self._name!r}: a step needs a non-empty name")
        where = f"saga {self._name!r}, step {name!r}"
        if name in self._steps:
            raise SagaDefinitionError(f"{where}: a step with this name already exists")
        is_child = _is_child_workflow(activity, where)
        compensate_is_child = False
        if compensate is not None:
            compensate_is_child = _is_child_workflow(compensate, f"{where}, compensate")
        elif compensate_arg is not SAME_ARG or compensate_on_failure:
            raise SagaDefinitionError(f"{where}: compensation settings without compensate=")
        if pivot and compensate is not None:
            raise SagaDefinitionError(
                f"{where}: the pivot is the point of no return; it has no compensation"
            )
        if pivot and self._pivot is not None:
            raise SagaDefinitionError(
                f"{where}: the saga already has a pivot, {self._pivot.name!r}"
            )
        if public_note is not None and not callable(public_note):
            raise SagaTypeError(f"{where}: public_note= takes a function of the result")
        deps: list[Step[Any] | str] = []
        for dep in after:
            if isinstance(dep, Step):
                if self._steps.get(dep.name) is not dep:
                    raise SagaDefinitionError(f"{where}: depends on {dep.name!r} of another saga")
            elif not isinstance(dep, str):
                raise SagaTypeError(f"{where}: after= takes steps or step names, not {dep!r}")
            deps.append(dep)
        options = check_options(activity_options, where)
        step: Step[Any] = Step(
            index=len(self._steps),
            name=name,
            activity=activity,
            is_child=is_child,
            arg=arg,
            compensate=compensate,
            compensate_is_child=compensate_is_child,
            compensate_arg=compensate_arg,
            compensation_name=compensation_name or f"undo {name}",
            compensate_on_failure=compensate_on_failure,
            after=deps,
            options=merge(self._options, options),
            compensation_options=merge(
                self._compensation_options,
                _task_queue_of(options),
                check_options(compensation_options or {}, f"{where}, compensation"),
            ),
            public_note=public_note,
        )
        step._explicit_retry = "retry_policy" in activity_options
        if pivot:
            self._pivot = step
        self._steps[name] = step
        return step

    def _resolve_graph(self) -> None:
        """Resolve dependencies by name and reject unknown ones and cycles."""
        if not self._steps:
            raise SagaDefinitionError(f"saga {self._name!r} has no steps")
        for step in self._steps.values():
            linked: set[Step[Any]] = set()  # a set: a step may wait for thousands
            for dep in step._after:
                target = self._steps.get(dep if isinstance(dep, str) else dep.name)
                if target is None:
                    raise SagaDefinitionError(
                        f"saga {self._name!r}, step {step.name!r}: depends on unknown step {dep!r}"
                    )
                if target is step:
                    raise SagaDefinitionError(
                        f"saga {self._name!r}, step {step.name!r}: depends on itself"
                    )
                if target not in linked:
                    linked.add(target)
                    step._deps.append(target)
                    target._dependents.append(step)
        try:
            TopologicalSorter({s: s._deps for s in self._steps.values()}).prepare()
        except CycleError as err:
            cycle = " -> ".join(s.name for s in err.args[1])
            raise SagaDefinitionError(f"saga {self._name!r}: dependency cycle {cycle}") from None
        if self._pivot is not None:
            self._place_around_pivot(self._pivot)
        undoable = sum(s._compensate is not None for s in self._steps.values())
        least = EVENTS_PER_STEP_FLOOR * (len(self._steps) + undoable) + 10
        if least > HISTORY_EVENT_LIMIT:
            raise SagaDefinitionError(
                f"saga {self._name!r}: {len(self._steps)} steps need at least {least:,} "
                f"history events, more than Temporal's limit of {HISTORY_EVENT_LIMIT:,}; "
                "split it into nested sagas (a step can run a saga as a child workflow)"
            )

    def _place_around_pivot(self, pivot: Step[Any]) -> None:
        """Check every step is before or after the pivot; make those after retry forever."""
        before, after = _reachable(pivot, "_deps"), _reachable(pivot, "_dependents")
        for step in self._steps.values():
            where = f"saga {self._name!r}, step {step.name!r}"
            if step in after:
                if step._compensate is not None:
                    raise SagaDefinitionError(
                        f"{where}: comes after the pivot {pivot.name!r}, so it is retried "
                        "until it succeeds and cannot declare a compensation"
                    )
                step._after_pivot = True
                if not step._explicit_retry:
                    forever = dataclasses.replace(step._options["retry_policy"], maximum_attempts=0)
                    step._options = merge(step._options, {"retry_policy": forever})
            elif step is not pivot and step not in before:
                raise SagaDefinitionError(
                    f"{where}: neither before nor after the pivot {pivot.name!r}; with a "
                    "pivot, every step must depend on it or be one of its dependencies"
                )

    async def run(self) -> SagaResult:
        """Run the saga: execute the steps, and compensate if one fails.

        Also registers the ``saga_state`` query and keeps the workflow's current
        details (shown by the Web UI) set to the live trace.

        Once the saga starts undoing, a cancel of the workflow (even a second one)
        no longer interrupts it: the compensations running finish, the remaining
        ones still run, and only then does the cancel take effect.

        Returns:
            The state and every step's result, when all steps succeeded.

        Raises:
            SagaFailed: A step failed or the saga timed out; what took effect was
                compensated (``state.status`` says whether every compensation
                succeeded).
            SagaDefinitionError: The steps' dependencies are unknown or cyclic, or
                the saga could never fit in a workflow's history; nothing was
                scheduled.
            asyncio.CancelledError: The workflow was cancelled; what took effect was
                compensated first.
        """
        if self._started:
            raise RuntimeError(f"saga {self._name!r} has already run")
        self._resolve_graph()
        self._run_id = saga_run_id(self._name, _next_run_number(self._name))
        self._step_lines = [step_line(s, self._pivot_name) for s in self._steps.values()]
        self._started = True
        self._started_at = workflow.now()
        info = workflow.info()
        self._history_at_start = info.get_current_history_length(), info.get_current_history_size()
        workflow.set_query_handler(SAGA_STATE_QUERY, lambda: self.state)
        self._set_status(SagaStatus.RUNNING)
        cancelled = False
        try:
            await self._forward()
        except asyncio.CancelledError:
            cancelled = True
            self._fail(None, "saga cancelled")
        # From here the saga only winds down. It runs in a task of its own, which the
        # workflow's cancellation never reaches (that goes to the task running this
        # method), so no cancel, first or second, can cut the undo short.
        ending = asyncio.create_task(self._wind_down())
        while not ending.done():
            try:
                await workflow.wait([ending])
            except asyncio.CancelledError:
                cancelled = True
        ending.result()
        if self._reason is None:
            # Everything succeeded before a cancel could stop anything: that stands.
            return SagaResult(
                state=self.state,
                results={s.name: s._result for s in self._steps.values()},
            )
        if cancelled:
            raise asyncio.CancelledError("saga cancelled")
        raise SagaFailed(self._failure_state())

    async def _wind_down(self) -> None:
        """Settle the steps in flight, then undo what took effect (if the saga failed)."""
        await self._drain()
        for step in self._steps.values():
            if step._outcome is StepStatus.PENDING:
                step._outcome = StepStatus.SKIPPED
                self._publish(step)
        if self._reason is None:
            self._finish(SagaStatus.SUCCEEDED)
            return
        if not self._past_pivot:  # past the point of no return, nothing is undone
            await self._compensate()
        needs_human = self.state.needs_human
        self._finish(SagaStatus.COMPENSATION_FAILED if needs_human else SagaStatus.COMPENSATED)

    def _failure_state(self) -> SagaState:
        """The state ``SagaFailed`` carries: bounded, so a large saga's failure fits a payload."""
        state = self.state
        if len(state.steps) <= FULL_STATE_STEPS:
            return state
        keep = {state.failed_step, state.pivot, *state.needs_human[:FULL_STATE_STEPS]}
        kept = [s for s in state.steps if s.name in keep]
        return state.model_copy(
            update={"steps": kept, "omitted_steps": len(state.steps) - len(kept)}
        )

    async def _forward(self) -> None:
        """Start every step whose dependencies succeeded, until done or failed."""
        sorter = TopologicalSorter({s: s._deps for s in self._steps.values()})
        sorter.prepare()
        ready: deque[Step[Any]] = deque()  # may start, once max_parallelism allows
        deadline: asyncio.Task[None] | None = None
        if self._timeout is not None:
            deadline = asyncio.create_task(workflow.sleep(self._timeout))
        try:
            while True:
                if self._reason is None:
                    ready.extend(sorter.get_ready())
                    while ready and len(self._running) < self._parallelism():
                        if not self._history_has_room_for(ready[0]):
                            self._fail(None, HISTORY_FULL)
                            break
                        step = ready.popleft()
                        self._undoable += step._compensate is not None
                        self._running[asyncio.create_task(self._execute(step))] = step
                if not self._running:
                    return
                waiting: list[asyncio.Task[None]] = list(self._running)
                if deadline is not None:
                    waiting.append(deadline)
                done, _ = await workflow.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is deadline:
                        deadline = None
                        self._fail(None, f"saga timed out after {self._timeout}")
                        self._cancel_in_flight_steps()
                        continue
                    step = self._running.pop(task)
                    task.result()  # a determinism error in a user callable: fail the task
                    if step._outcome is StepStatus.SUCCEEDED:
                        sorter.done(step)
                    elif self._reason is None:
                        self._fail(step, step._error or "failed")
                        if self._cancel_in_flight:
                            self._cancel_in_flight_steps()
        finally:
            if deadline is not None:
                deadline.cancel()

    def _history_has_room_for(self, step: Step[Any]) -> bool:
        """Whether starting ``step`` leaves room in the history to undo everything.

        Temporal ends a workflow whose history outgrows its limits, and a saga cut off
        there could not undo anything. So before each step the saga checks that the
        history can still take the steps in flight and the compensation of every
        step started so far, at the cost per started step seen so far (at least 3
        events, 6 until 100 steps have finished), with a quarter more for safety.
        """
        info = workflow.info()
        started = self._finished_count + len(self._running)
        undo = self._undoable + (step._compensate is not None)
        in_flight = len(self._running) + 1
        early = self._finished_count < 100
        events_floor = EVENTS_PER_STEP_WORST_CASE if early else EVENTS_PER_STEP_FLOOR
        for used, at_start, limit, floor, margin in (
            (
                info.get_current_history_length(),
                self._history_at_start[0],
                HISTORY_EVENT_LIMIT,
                events_floor,
                500,
            ),
            (
                info.get_current_history_size(),
                self._history_at_start[1],
                HISTORY_BYTES_LIMIT,
                0,
                2 * 1024 * 1024,
            ),
        ):
            per_step = max(floor, (used - at_start) / started if started else 0)
            if used + per_step * (in_flight + 1.25 * undo) + margin > limit:
                return False
        return True

    def _parallelism(self) -> int:
        """How many steps (or compensations) may be in flight now.

        The server restarts a workflow task when more than 100 events arrive while it
        runs (``history.maximumBufferedEventsBatch``), and a restart replays the
        whole history. Cheap while the history is short; past 2,000 events a replay
        takes seconds, and restarts can follow one another until the task times
        out. So past that, at most 40 steps are in flight: their completions (2
        events each) can never fill the buffer.
        """
        if workflow.info().get_current_history_length() > LARGE_HISTORY_EVENTS:
            return min(self._max_parallelism, LARGE_HISTORY_PARALLELISM)
        return self._max_parallelism

    def _cancel_in_flight_steps(self) -> None:
        for task in self._running:
            task.cancel()

    async def _drain(self) -> None:
        """Cancel the steps in flight and wait until each one's outcome is known."""
        self._cancel_in_flight_steps()
        if self._running:
            await workflow.wait(list(self._running))
        for task in self._running:
            task.result()
        self._running.clear()

    async def _execute(self, step: Step[Any]) -> None:
        step._outcome = StepStatus.RUNNING
        step._started_at = workflow.now()
        self._publish(step)
        try:
            step._args = _build_args(step._arg)
            step._result = await _invoke(
                step._activity,
                step._is_child,
                step._args,
                name=step.name,
                ident=step_activity_id(self._run_id, step.name),
                options=step._options,
            )
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            outcome = _describe(err)
            step._outcome, step._uncertain = outcome.status, outcome.uncertain
            step._error = outcome.message
            step._nested_needs_human = outcome.nested_needs_human
        else:
            step._outcome = StepStatus.SUCCEEDED
            if step._public_note is not None:
                try:
                    step._note = str(step._public_note(step._result))
                except Exception as err:
                    step._note = f"note failed: {type(err).__name__}"
        step._ended_at = workflow.now()
        step._finished = self._finished_count
        self._finished_count += 1
        self._publish(step)

    async def _compensate(self) -> None:
        """Undo, in reverse dependency order, every step that took effect or may have."""
        self._set_status(SagaStatus.COMPENSATING)
        steps = list(self._steps.values())
        if not self._parallel_compensation:
            todo = [s for s in steps if s._needs_compensation()]
            for step in sorted(todo, key=lambda s: s._finished or 0, reverse=True):
                await self._undo(step)
            return
        # A step's compensation waits for the compensations of all steps after it.
        sorter = TopologicalSorter({s: s._dependents for s in steps})
        sorter.prepare()
        ready: deque[Step[Any]] = deque()
        running: dict[asyncio.Task[None], Step[Any]] = {}
        while sorter.is_active():
            for step in sorter.get_ready():
                if step._needs_compensation():
                    ready.append(step)
                else:
                    sorter.done(step)
            while ready and len(running) < self._parallelism():
                step = ready.popleft()
                running[asyncio.create_task(self._undo(step))] = step
            if running:
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                    sorter.done(running.pop(task))

    async def _undo(self, step: Step[Any]) -> None:
        assert step._compensate is not None
        order = self._compensation_count
        self._compensation_count += 1
        started = workflow.now()
        step._compensation = CompensationState(
            name=step._compensation_name, status=StepStatus.RUNNING, order=order, started_at=started
        )
        self._publish(step)
        error: str | None = None
        try:
            same = step._compensate_arg is SAME_ARG
            args = step._args if same else _build_args(step._compensate_arg)
            await _invoke(
                step._compensate,
                step._compensate_is_child,
                args,
                name=step._compensation_name,
                ident=step_activity_id(self._run_id, step.name) + COMPENSATION_SUFFIX,
                options=step._compensation_options,
            )
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            error = _describe(err).message
        step._compensation = step._compensation.model_copy(
            update={
                "status": StepStatus.FAILED if error else StepStatus.SUCCEEDED,
                "ended_at": workflow.now(),
                "error": error,
            }
        )
        self._publish(step)

    def _fail(self, step: Step[Any] | None, reason: str) -> None:
        if self._reason is None:
            self._failed_step = step
            self._reason = reason

    def _finish(self, status: SagaStatus) -> None:
        self._ended_at = workflow.now()
        self._set_status(status)

    def _set_status(self, status: SagaStatus) -> None:
        self._status = status
        if self._search_attributes:
            workflow.upsert_search_attributes([SAGA_STATUS_ATTRIBUTE.value_set(status.value)])
        self._publish()

    def _publish(self, step: Step[Any] | None = None) -> None:
        """Show the live trace on the workflow's page in the Web UI (no history cost).

        Only the changed step's lines are re-rendered, and the text is assembled once
        per workflow activation (a callback that runs before the activation ends), so
        a long saga costs O(1) per step change, not O(steps).
        """
        if step is not None:
            self._step_lines[step._index] = step_line(step, self._pivot_name)
            if step._compensation is not None:
                line = compensation_line(step._compensation)
                order = step._compensation.order
                if order == len(self._compensation_lines):
                    self._compensation_lines.append(line)
                else:
                    self._compensation_lines[order] = line
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        final = self._status is SagaStatus.COMPENSATION_FAILED
        workflow.set_current_details(
            assemble_trace(
                self._step_lines,
                self._compensation_lines,
                status=self._status,
                reason=self._reason,
                failed_step=self._failed_step.name if self._failed_step else None,
                past_pivot=self._past_pivot,
                needs_human=self.state.needs_human if final else (),
            )
        )
