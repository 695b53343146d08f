"""A saga's definition: its options, its steps, and the checks on its graph.

Everything a user can get wrong is refused here, before anything is scheduled, with a
``SagaDefinitionError`` (a ``ValueError``) or ``SagaTypeError`` (a ``TypeError``)
that names the saga and the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from graphlib import CycleError, TopologicalSorter
from typing import Any, TypeVar, Unpack, overload

from ._calls import is_child_workflow
from ._errors import SagaDefinitionError, SagaTypeError
from ._limits import (
    DEFAULT_MAX_PARALLELISM,
    EVENTS_PER_STEP_FLOOR,
    HISTORY_EVENT_LIMIT,
    PENDING_ACTIVITY_LIMIT,
)
from ._options import (
    COMPENSATION_DEFAULTS,
    STEP_DEFAULTS,
    ActivityOptions,
    check_options,
    merge,
    task_queue_only,
)
from ._step import SAME_ARG, Activity, Step
from ._versions import Patch, check_patch

R = TypeVar("R")


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


class SagaDefinition:
    """The definition half of :class:`temporal_saga.Saga` (see its docs)."""

    def __init__(
        self,
        name: str,
        *,
        parallel_compensation: bool = True,
        cancel_in_flight: bool = False,
        timeout: timedelta | None = None,
        max_parallelism: int | None = None,
        search_attributes: bool = False,
        human_timeout: timedelta | None = None,
        compensation_options: ActivityOptions | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> None:
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError("a saga needs a non-empty name")
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta()):
            raise SagaDefinitionError(f"saga {name!r}: timeout must be a positive timedelta")
        if human_timeout is not None and (
            not isinstance(human_timeout, timedelta) or human_timeout < timedelta()
        ):
            raise SagaDefinitionError(
                f"saga {name!r}: human_timeout must be a timedelta of 0 or more (0: do "
                f"not wait for a human), not {human_timeout!r}"
            )
        self._human_timeout = human_timeout
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
            task_queue_only(self._options),
            check_options(compensation_options or {}, f"saga {name!r} compensations"),
        )
        self._steps: dict[str, Step[Any]] = {}
        self._pivot: Step[Any] | None = None
        self._started = False  # run() began: no more steps

    @property
    def name(self) -> str:
        """The saga's name."""
        return self._name

    @property
    def steps(self) -> list[Step[Any]]:
        """The steps, in definition order."""
        return list(self._steps.values())

    @overload
    def step(
        self,
        name: str,
        activity: Callable[..., Awaitable[R]],
        arg: Any = None,
        *,
        label: str | None = None,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        when: Callable[[], object] | None = None,
        since: Patch | None = None,
        until: Patch | None = None,
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
        label: str | None = None,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        when: Callable[[], object] | None = None,
        since: Patch | None = None,
        until: Patch | None = None,
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
        label: str | None = None,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        when: Callable[[], object] | None = None,
        since: Patch | None = None,
        until: Patch | None = None,
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
        label: str | None = None,
        compensate: Activity | None = None,
        compensate_arg: Any = SAME_ARG,
        compensation_name: str | None = None,
        compensate_on_failure: bool = False,
        pivot: bool = False,
        after: Iterable[Step[Any] | str] = (),
        when: Callable[[], object] | None = None,
        since: Patch | None = None,
        until: Patch | None = None,
        compensation_options: ActivityOptions | None = None,
        public_note: Callable[[Any], str] | None = None,
        **activity_options: Unpack[ActivityOptions],
    ) -> Step[Any]:
        """Add a step: one activity call, with an optional compensation.

        Args:
            name: The step's identity, unique within the saga: ``after=``, the
                results and the state name it, and its activity id (so its
                idempotency key) is made of it, so renaming a step breaks the
                sagas in flight (change ``label`` instead). Also the text it shows,
                unless ``label`` is given. Public text, readable without the
                encryption key: keep personal data out of it.
            activity: The ``@activity.defn`` function, an activity's name, or a
                workflow's ``@workflow.run`` method: the step is then a child
                workflow (a nested saga, which compensates itself if it fails).
            label: The text the step shows in the trace, the state and the Web UI
                (the activity's summary) instead of its name. Only display: change
                it freely while sagas run. Public text, like ``name``.
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
                (default ``"undo <label or name>"``); display only, like ``label``.
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
            when: A condition: a zero-argument callable, called once the step's
                dependencies have succeeded (before ``arg``), that can read their
                results: ``when=lambda: plane.result.price > 500``. False: the step
                is ``SKIPPED`` (no activity runs, nothing to undo; the trace says
                "condition not met") and counts as done for the steps after it. A
                condition that raises fails the step, like an ``arg`` that raises.
            since: A patch id (``workflow.patched``), or :func:`deprecated` of one
                (step 2 of the life cycle): the step was added by a code
                change while sagas were running. A saga that reaches the step on
                code that has it runs it; a saga whose history shows it passed that
                point before the change replays without it. Without it the step is
                ``SKIPPED`` ("not in this saga's version"), so it counts as done for
                the steps after it and has nothing to undo. Decided when the step
                is due, before ``when``. See "Changing a saga while sagas run" in
                the README for the patch's life cycle.
            until: A patch id, or :func:`deprecated` of one: the step is retired by
                a code change. Sagas that
                reach it on the new code skip it (as with ``since``); those whose
                history ran it replay with it, and still undo it.
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
        if self._started and not self._in_block:
            raise SagaDefinitionError(
                f"saga {self._name!r}: cannot add a step once it runs (add steps while it "
                "runs with `async with Saga(...) as saga:`)"
            )
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError(f"saga {self._name!r}: a step needs a non-empty name")
        where = f"saga {self._name!r}, step {name!r}"
        if name in self._steps:
            raise SagaDefinitionError(f"{where}: a step with this name already exists")
        is_child = is_child_workflow(activity, where)
        compensate_is_child = False
        if compensate is not None:
            compensate_is_child = is_child_workflow(compensate, f"{where}, compensate")
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
        if label is not None and (not isinstance(label, str) or not label):
            raise SagaTypeError(f"{where}: label= takes non-empty text, not {label!r}")
        if public_note is not None and not callable(public_note):
            raise SagaTypeError(f"{where}: public_note= takes a function of the result")
        if when is not None and not callable(when):
            raise SagaTypeError(f"{where}: when= takes a zero-argument callable, not {when!r}")
        for patch in (since, until):
            if patch is not None and not check_patch(patch):
                raise SagaTypeError(
                    f"{where}: since= and until= take a patch id or deprecated(patch id), "
                    f"not {patch!r}"
                )
        if pivot and (since is not None or until is not None):
            raise SagaDefinitionError(
                f"{where}: the pivot cannot come and go with versions; the steps after "
                "it rely on it"
            )
        if when is not None and pivot:
            raise SagaDefinitionError(
                f"{where}: the pivot cannot be conditional; the steps after it rely on it"
            )
        deps: list[Step[Any] | str] = []
        for dep in after:
            if isinstance(dep, Step):
                if self._steps.get(dep.name) is not dep:
                    raise SagaDefinitionError(f"{where}: depends on {dep.name!r} of another saga")
            elif not isinstance(dep, str):
                raise SagaTypeError(f"{where}: after= takes steps or step names, not {dep!r}")
            deps.append(dep)
        options = check_options(activity_options, where)
        own_compensation = check_options(compensation_options or {}, f"{where}, compensation")
        step: Step[Any] = Step(
            index=len(self._steps),
            name=name,
            label=label,
            activity=activity,
            is_child=is_child,
            arg=arg,
            compensate=compensate,
            compensate_is_child=compensate_is_child,
            compensate_arg=compensate_arg,
            compensation_name=compensation_name or f"undo {label or name}",
            compensate_on_failure=compensate_on_failure,
            after=deps or (),
            # Steps without options of their own share the saga's (never changed in
            # place): a saga of thousands of steps makes no copies.
            options=merge(self._options, options) if options else self._options,
            compensation_options=(
                merge(self._compensation_options, task_queue_only(options), own_compensation)
                if options or own_compensation
                else self._compensation_options
            ),
            public_note=public_note,
            when=when,
            since=since,
            until=until,
        )
        step._explicit_retry = "retry_policy" in activity_options
        if self._in_block:
            self._start_in_block(step, pivot=pivot)  # may refuse it: before it counts
        if pivot:
            self._pivot = step
        self._steps[name] = step
        return step

    def _named_deps(self, step: Step[Any]) -> list[Step[Any]]:
        """The steps ``step``'s ``after=`` names (or gives), each checked to exist."""
        targets = []
        for dep in step._after:
            target = self._steps.get(dep if isinstance(dep, str) else dep.name)
            if target is None:
                raise SagaDefinitionError(
                    f"saga {self._name!r}, step {step.name!r}: depends on unknown step {dep!r}"
                )
            targets.append(target)
        return targets

    @staticmethod
    def _link(step: Step[Any], targets: Iterable[Step[Any]]) -> None:
        """Make ``step`` wait for each of ``targets`` (once each: a step may wait for
        thousands), and each undo wait for ``step``'s."""
        for target in dict.fromkeys(targets):
            if not step._deps:
                step._deps = []
            step._deps.append(target)
            if not target._dependents:
                target._dependents = []
            target._dependents.append(step)

    def _place_after_pivot(self, step: Step[Any], pivot: Step[Any]) -> None:
        """A step after the pivot: no compensation, retried until it succeeds (unless it
        sets its own retry policy)."""
        if step._compensate is not None:
            raise SagaDefinitionError(
                f"saga {self._name!r}, step {step.name!r}: comes after the pivot "
                f"{pivot.name!r}, so it is retried until it succeeds and cannot declare a "
                "compensation"
            )
        step._after_pivot = True
        if not step._explicit_retry:
            forever = dataclasses.replace(step._options["retry_policy"], maximum_attempts=0)
            step._options = merge(step._options, {"retry_policy": forever})

    # The imperative form (see Saga.__aenter__) starts each step as it is added.
    _in_block = False

    def _start_in_block(self, step: Step[Any], *, pivot: bool) -> None:
        raise NotImplementedError

    def _resolve_graph(self) -> None:
        """Resolve dependencies by name and reject unknown ones and cycles."""
        if not self._steps:
            raise SagaDefinitionError(f"saga {self._name!r} has no steps")
        for step in self._steps.values():
            targets = self._named_deps(step)
            if step in targets:
                raise SagaDefinitionError(
                    f"saga {self._name!r}, step {step.name!r}: depends on itself"
                )
            self._link(step, targets)
        try:
            if any(s._deps for s in self._steps.values()):  # else there is no cycle
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
                self._place_after_pivot(step, pivot)
            elif step is not pivot and step not in before:
                raise SagaDefinitionError(
                    f"{where}: neither before nor after the pivot {pivot.name!r}; with a "
                    "pivot, every step must depend on it or be one of its dependencies"
                )
