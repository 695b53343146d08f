"""A saga's definition: its options, its steps, and the checks on its graph.

Everything a user can get wrong is refused here, before anything is scheduled, with a
``SagaDefinitionError`` (a ``ValueError``) or ``SagaTypeError`` (a ``TypeError``)
that names the saga and the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import timedelta
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any, TypedDict

from ._calls import is_child_workflow
from ._errors import SagaDefinitionError, SagaTypeError
from ._limits import (
    DEFAULT_MAX_PARALLELISM,
    EVENTS_PER_STEP_FLOOR,
    HISTORY_EVENT_LIMIT,
    PENDING_ACTIVITY_LIMIT,
)
from ._nexus import NexusOperation
from ._options import (
    COMPENSATION_DEFAULTS,
    STEP_DEFAULTS,
    ActivityOptions,
    check_options,
    merge,
    task_queue_only,
)
from ._step import SAME_ARG, Activity, Step, StepDefinition
from ._versions import Patch, check_patch

if TYPE_CHECKING:
    from ._events import EventWait


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


class SagaOptions(ActivityOptions, total=False):
    """The keyword arguments of ``Saga(...)`` (each is described there): the saga's
    own settings, and activity options for every step."""

    parallel_compensation: bool
    cancel_in_flight: bool
    timeout: timedelta | None
    max_parallelism: int | None
    search_attributes: bool
    human_timeout: timedelta | None
    compensation_options: ActivityOptions | None


class EventStepOptions(TypedDict, total=False):
    """The keyword arguments of ``Saga.event(...)`` (each is described at
    ``Saga.step``): a step's settings, which an event step shares."""

    label: str | None
    compensate: Activity | None
    compensate_arg: Any
    compensation_name: str | None
    pivot: bool
    after: Iterable[Step[Any] | str]
    when: Callable[[], object] | None
    since: Patch | None
    until: Patch | None
    compensation_options: ActivityOptions | None
    public_note: Callable[[Any], str] | None


class StepOptions(ActivityOptions, EventStepOptions, total=False):
    """The keyword arguments of ``Saga.step(...)`` (each is described there): the
    step's own settings, and activity options for it."""

    compensate_on_failure: bool


# The settings of Saga(...) and Saga.step(...) that are not activity options, with
# their defaults, in the order _take returns them.
_SAGA_SETTINGS: dict[str, Any] = {
    "parallel_compensation": True,
    "cancel_in_flight": False,
    "timeout": None,
    "max_parallelism": None,
    "search_attributes": False,
    "human_timeout": None,
    "compensation_options": None,
}
_STEP_SETTINGS: dict[str, Any] = {
    "label": None,
    "compensate": None,
    "compensate_arg": SAME_ARG,
    "compensation_name": None,
    "compensate_on_failure": False,
    "pivot": False,
    "after": (),
    "when": None,
    "since": None,
    "until": None,
    "compensation_options": None,
    "public_note": None,
}


def _take(options: dict[str, Any], settings: dict[str, Any]) -> Iterable[Any]:
    """Take ``settings`` out of a call's keyword ``options`` (their defaults where
    absent); what stays in ``options`` is activity options."""
    values = settings.copy()
    for key in [key for key in options if key in settings]:  # a call names a few
        values[key] = options.pop(key)
    return values.values()


class SagaDefinition:
    """A saga as declared: its options, its steps and their graph, every check.

    ``Saga`` owns one. Until the saga starts, steps are declared and added; ``run()``
    resolves the graph (names, cycles, the pivot, the history's size) and from then on
    nothing here changes, except in the imperative form, where each step is linked to
    what came before it as it is added.
    """

    def __init__(self, name: str, options: SagaOptions, *, misplaced: int = 0) -> None:
        """Check the saga's name and options (those of ``Saga(...)``; ``misplaced``:
        how many positional arguments it got too many)."""
        activity_options: dict[str, Any] = dict(options)  # what is left: checked below
        (
            parallel_compensation,
            cancel_in_flight,
            timeout,
            max_parallelism,
            search_attributes,
            human_timeout,
            compensation_options,
        ) = _take(activity_options, _SAGA_SETTINGS)
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError("a saga needs a non-empty name")
        if misplaced:
            raise SagaTypeError(
                f"saga {name!r}: Saga() takes its name alone as a positional argument; "
                f"pass its options by keyword ({misplaced} more positional given)"
            )
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta()):
            raise SagaDefinitionError(f"saga {name!r}: timeout must be a positive timedelta")
        if human_timeout is not None and (
            not isinstance(human_timeout, timedelta) or human_timeout < timedelta()
        ):
            raise SagaDefinitionError(
                f"saga {name!r}: human_timeout must be a timedelta of 0 or more (0: do "
                f"not wait for a human), not {human_timeout!r}"
            )
        self.human_timeout = human_timeout
        self.name = name
        self.parallel_compensation = parallel_compensation
        self.cancel_in_flight = cancel_in_flight
        if max_parallelism is not None and (
            not isinstance(max_parallelism, int)
            or not 1 <= max_parallelism <= PENDING_ACTIVITY_LIMIT
        ):
            raise SagaDefinitionError(
                f"saga {name!r}: max_parallelism must be from 1 to {PENDING_ACTIVITY_LIMIT} "
                "(Temporal's default limit of pending activities per workflow), "
                f"not {max_parallelism!r}"
            )
        self.timeout = timeout
        self.max_parallelism = max_parallelism or DEFAULT_MAX_PARALLELISM
        self.search_attributes = search_attributes
        checked = check_options(activity_options, f"saga {name!r}") if activity_options else {}
        self._options = merge(STEP_DEFAULTS, checked)
        # A compensation runs where its step runs unless compensation options say
        # otherwise: the service that did it undoes it.
        self._compensation_options = merge(
            COMPENSATION_DEFAULTS,
            task_queue_only(self._options),
            check_options(compensation_options, f"saga {name!r} compensations")
            if compensation_options
            else {},
        )
        self.by_name: dict[str, Step[Any]] = {}  # the steps, in definition order
        self.pivot: Step[Any] | None = None
        self.started = False  # the saga began: frozen, but for the imperative form
        self.in_block = False  # the imperative form's block runs: steps start as added
        self.linked = False  # some step depends on another
        self.event_steps: dict[str, Step[Any]] = {}  # each event's step (event steps)
        self._undoable = 0  # steps with a compensation

    def declare(
        self,
        name: str,
        activity: Activity | None,
        arg: Any,
        options: StepOptions,
        *,
        misplaced: int,
        adding_while_running: bool,
        event: EventWait | None = None,
    ) -> Step[Any]:
        """Check a step's arguments and options (those of ``Saga.step``) and make the
        step; :meth:`add` adds it once the saga accepts it. ``options`` is the call's own
        keyword arguments: what is not a step option is an activity option."""
        activity_options: dict[str, Any] = options  # type: ignore[assignment]  # what is left
        (
            label,
            compensate,
            compensate_arg,
            compensation_name,
            compensate_on_failure,
            pivot,
            after,
            when,
            since,
            until,
            compensation_options,
            public_note,
        ) = _take(activity_options, _STEP_SETTINGS)
        if self.started and not adding_while_running:
            raise SagaDefinitionError(
                f"saga {self.name!r}: cannot add a step once it runs (add steps while it "
                "runs with `async with Saga(...) as saga:`)"
            )
        if not isinstance(name, str) or not name:
            raise SagaDefinitionError(f"saga {self.name!r}: a step needs a non-empty name")
        where = f"saga {self.name!r}, step {name!r}"
        if name in self.by_name:
            raise SagaDefinitionError(f"{where}: a step with this name already exists")
        if event is not None:
            self._check_event_step(event, activity_options, compensate_on_failure, where)
        elif activity is None:
            raise SagaTypeError(f"{where}: step() needs the activity to call")
        if misplaced:
            raise SagaTypeError(
                f"{where}: step() takes the name, the activity and one argument as positional "
                f"arguments; pass compensate= and the other options by keyword "
                f"({misplaced} more positional given)"
            )
        is_child = activity is not None and is_child_workflow(activity, where)
        for callee, own, whose in (
            (activity, activity_options, "step"),
            (compensate, compensation_options, "compensation"),
        ):
            if isinstance(callee, NexusOperation) and own:
                raise SagaDefinitionError(
                    f"{where}: a Nexus {whose} takes no activity options "
                    f"({', '.join(sorted(own))}); its NexusOperation sets "
                    "schedule_to_close_timeout and cancellation_type"
                )
        compensate_is_child = False
        if compensate is not None:
            compensate_is_child = is_child_workflow(compensate, f"{where}, compensate")
        elif compensate_arg is not SAME_ARG or compensate_on_failure:
            raise SagaDefinitionError(f"{where}: compensation settings without compensate=")
        if pivot and compensate is not None:
            raise SagaDefinitionError(
                f"{where}: the pivot is the point of no return; it has no compensation"
            )
        if pivot and self.pivot is not None:
            raise SagaDefinitionError(f"{where}: the saga already has a pivot, {self.pivot.name!r}")
        if label is not None and (not isinstance(label, str) or not label):
            raise SagaTypeError(f"{where}: label= takes non-empty text, not {label!r}")
        if public_note is not None and not callable(public_note):
            raise SagaTypeError(f"{where}: public_note= takes a function of the result")
        if when is not None and not callable(when):
            raise SagaTypeError(f"{where}: when= takes a zero-argument callable, not {when!r}")
        for patch in (since, until):
            if patch is not None and not check_patch(patch):
                raise SagaTypeError(
                    f"{where}: since= and until= take a patch id or deprecated_patch(patch id), "
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
                if self.by_name.get(dep.name) is not dep:
                    raise SagaDefinitionError(f"{where}: depends on {dep.name!r} of another saga")
            elif not isinstance(dep, str):
                raise SagaTypeError(f"{where}: after= takes steps or step names, not {dep!r}")
            deps.append(dep)
        # Most steps set no options of their own: nothing to check, nothing to merge.
        step_options = check_options(activity_options, where) if activity_options else {}
        own_compensation = (
            check_options(compensation_options, f"{where}, compensation")
            if compensation_options
            else {}
        )
        return Step(
            StepDefinition(
                index=len(self.by_name),
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
                after=tuple(deps),
                # Steps without options of their own share the saga's (never changed
                # in place): a saga of thousands of steps makes no copies.
                options=merge(self._options, step_options) if step_options else self._options,
                compensation_options=(
                    merge(
                        self._compensation_options, task_queue_only(step_options), own_compensation
                    )
                    if step_options or own_compensation
                    else self._compensation_options
                ),
                explicit_retry="retry_policy" in step_options,
                pivot=pivot,
                public_note=public_note,
                when=when,
                since=since,
                until=until,
                event=event,
            )
        )

    def _check_event_step(
        self, event: EventWait, activity_options: dict[str, Any], on_failure: bool, where: str
    ) -> None:
        """What an event step cannot have: activity options, ``compensate_on_failure``
        (its failure is the event's absence), an event another step waits for."""
        if activity_options:
            names = ", ".join(sorted(activity_options))
            raise SagaTypeError(f"{where}: an event step calls no activity: {names} do not apply")
        if on_failure:
            raise SagaDefinitionError(
                f"{where}: an event step fails when its event does not come: nothing to undo"
            )
        other = self.event_steps.get(event.event)
        if other is not None:
            raise SagaDefinitionError(
                f"{where}: step {other.name!r} already waits for event {event.event!r}"
            )

    def add(self, step: Step[Any]) -> None:
        """Add a declared step (the saga accepted it)."""
        if step._definition.event is not None:
            self.event_steps[step._definition.event.event] = step
        if step._definition.pivot:
            self.pivot = step
        self._undoable += step._definition.compensate is not None
        self.by_name[step.name] = step

    def link_in_block(self, step: Step[Any], frontier: Iterable[Step[Any]]) -> None:
        """The imperative form: link a step added while the saga runs to the steps it
        names and to ``frontier`` (what the code awaited before adding it)."""
        self._link(step, [*frontier, *self._named_deps(step)])
        if self.pivot is not None:  # and past it (the scheduler checked)
            self._place_after_pivot(step, self.pivot)

    def resolve(self) -> None:
        """Resolve dependencies by name, reject unknown ones and cycles, place the steps
        around the pivot, check the saga fits in a history; then freeze it."""
        if not self.by_name:
            raise SagaDefinitionError(f"saga {self.name!r} has no steps")
        for step in self.by_name.values():
            targets = self._named_deps(step)
            if step in targets:
                raise SagaDefinitionError(
                    f"saga {self.name!r}, step {step.name!r}: depends on itself"
                )
            self._link(step, targets)
        try:
            if self.linked:  # else there is no cycle
                TopologicalSorter({s: s._deps for s in self.by_name.values()}).prepare()
        except CycleError as err:
            cycle = " -> ".join(s.name for s in err.args[1])
            raise SagaDefinitionError(f"saga {self.name!r}: dependency cycle {cycle}") from None
        if self.pivot is not None:
            self._place_around_pivot(self.pivot)
        least = EVENTS_PER_STEP_FLOOR * (len(self.by_name) + self._undoable) + 10
        if least > HISTORY_EVENT_LIMIT:
            raise SagaDefinitionError(
                f"saga {self.name!r}: {len(self.by_name)} steps need at least {least:,} "
                f"history events, more than Temporal's limit of {HISTORY_EVENT_LIMIT:,}; "
                "split it into nested sagas (a step can run a saga as a child workflow)"
            )

    def _named_deps(self, step: Step[Any]) -> list[Step[Any]]:
        """The steps ``step``'s ``after=`` names (or gives), each checked to exist."""
        targets = []
        for dep in step._definition.after:
            target = self.by_name.get(dep if isinstance(dep, str) else dep.name)
            if target is None:
                raise SagaDefinitionError(
                    f"saga {self.name!r}, step {step.name!r}: depends on unknown step {dep!r}"
                )
            targets.append(target)
        return targets

    def _link(self, step: Step[Any], targets: Iterable[Step[Any]]) -> None:
        """Make ``step`` wait for each of ``targets`` (once each: a step may wait for
        thousands), and each undo wait for ``step``'s."""
        for target in dict.fromkeys(targets):
            self.linked = True
            if not step._deps:
                step._deps = []
            step._deps.append(target)
            if not target._dependents:
                target._dependents = []
            target._dependents.append(step)

    def _place_after_pivot(self, step: Step[Any], pivot: Step[Any]) -> None:
        """A step after the pivot: no compensation, retried until it succeeds (unless it
        sets its own retry policy: see :func:`forward_options`)."""
        if step._definition.compensate is not None:
            raise SagaDefinitionError(
                f"saga {self.name!r}, step {step.name!r}: comes after the pivot "
                f"{pivot.name!r}, so it is retried until it succeeds and cannot declare a "
                "compensation"
            )
        step._after_pivot = True

    def _place_around_pivot(self, pivot: Step[Any]) -> None:
        """Check every step is before or after the pivot; mark those after it."""
        before, after = _reachable(pivot, "_deps"), _reachable(pivot, "_dependents")
        for step in self.by_name.values():
            if step in after:
                self._place_after_pivot(step, pivot)
            elif step is not pivot and step not in before:
                raise SagaDefinitionError(
                    f"saga {self.name!r}, step {step.name!r}: neither before nor after the "
                    f"pivot {pivot.name!r}; with a pivot, every step must depend on it or be "
                    "one of its dependencies"
                )


def forward_options(step: Step[Any]) -> ActivityOptions:
    """The options a step runs with: a step after the pivot is retried until it
    succeeds, unless it sets its own retry policy."""
    definition = step._definition
    if not step._after_pivot or definition.explicit_retry:
        return definition.options
    forever = dataclasses.replace(definition.options["retry_policy"], maximum_attempts=0)
    return merge(definition.options, {"retry_policy": forever})
