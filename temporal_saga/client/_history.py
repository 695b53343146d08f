"""Rebuild a saga's state from its workflow history alone (no worker needed).

A failed saga's last event carries its final state (``SagaFailed`` details), to which
history adds the attempts. Otherwise the state is read off the activities and child
workflows: the saga schedules each step with activity id ``<saga run>/<step>`` and
summary ``<step>``, and each compensation with id ``<saga run>/<step>/compensate``
and summary the compensation's name (ids as built in ``_activity``); a step (or
compensation) that is a child workflow has the workflow id ``<saga workflow
id>/<saga run>/<step>`` (``/compensate``); one that is a Nexus operation carries its
id in the ``temporal-saga-step`` Nexus header. An event step that waited is a timer
whose summary names the step and its event (``_protocol.event_timer_summary``): fired,
the step timed out; cancelled, it took its event (one came, by Update or Signal) or
was cancelled. Steps that never started leave no trace in history, nor does an event
step that found its event already kept, so a rebuilt state lists only steps that ran
or waited (and, after a failure past the pivot, the steps the failure's message
names as needing a human).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import DataConverter

from .._errors import NotASaga, SagaFailed
from .._protocol import (
    ACTIONS,
    NEEDS_HUMAN_PATCH,
    NEXUS_STEP_HEADER,
    SAGA_EVENT,
    GiveUp,
    ResolveStep,
    RetryStep,
    SendEvent,
    is_public,
    parse_event_timer_summary,
    parse_step_id,
)
from .._state import (
    CompensationState,
    OperatorAction,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from .._trace import duration


@dataclass
class _Activity:
    """A step or compensation seen in history: an activity or a child workflow."""

    activity_id: str
    summary: str
    scheduled_at: datetime
    public: bool = False  # its summary is the engine's public text
    attempts: int | None = None
    ended_at: datetime | None = None
    outcome: StepStatus = StepStatus.RUNNING
    uncertain: bool = False
    error: str | None = None
    event: str | None = None  # an event step's wait (a timer): the event
    timeout: timedelta | None = None  # and how long it waited at most


@dataclass
class _Update:
    """An operator's action, accepted by the saga (rejected ones leave no event)."""

    action: str
    request: RetryStep | ResolveStep | GiveUp | None  # None: encrypted, and no key here
    identity: str
    at: datetime
    answer: str | None = None  # the saga's one-line answer, once it completed


@dataclass
class _Rebuild:
    activities: dict[int, _Activity] = field(default_factory=dict)
    updates: dict[int, _Update] = field(default_factory=dict)  # by accepted event id
    waited_for_a_human: bool = False  # the NEEDS_HUMAN patch marker is in history
    events: set[str | None] = field(default_factory=set)  # received (None: unreadable)
    closed: EventType.ValueType | None = None
    failure: Failure | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def _time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def _failure_message(failure: Failure) -> str:
    if failure.HasField("timeout_failure_info"):
        kind = TimeoutType.Name(failure.timeout_failure_info.timeout_type)
        return f"timed out ({kind.removeprefix('TIMEOUT_TYPE_')})"
    return failure.message


def _innermost(failure: Failure) -> Failure:
    """A Nexus operation's failure's root cause: the handler's own error."""
    while failure.HasField("cause"):
        failure = failure.cause
    return failure


_CLOSING = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


# A child workflow's last event: its attributes, the step's outcome, whether the
# outcome is uncertain (the child may have had effects), and the step's error (None
# for a failed child: its failure's message).
_CHILD_ENDS: dict[EventType.ValueType, tuple[str, StepStatus, bool, str | None]] = {
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: (
        "child_workflow_execution_completed_event_attributes",
        StepStatus.SUCCEEDED,
        False,
        None,
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: (
        "child_workflow_execution_failed_event_attributes",
        StepStatus.FAILED,
        False,
        None,
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: (
        "child_workflow_execution_canceled_event_attributes",
        StepStatus.CANCELLED,
        True,
        "cancelled",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: (
        "child_workflow_execution_timed_out_event_attributes",
        StepStatus.FAILED,
        True,
        "timed out",
    ),
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: (
        "child_workflow_execution_terminated_event_attributes",
        StepStatus.FAILED,
        True,
        "terminated",
    ),
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED: (
        "start_child_workflow_execution_failed_event_attributes",
        StepStatus.FAILED,
        False,
        "could not start",
    ),
}


# A Nexus operation's last event, as ``_CHILD_ENDS`` (a failed one's error: the
# failure's cause's message, the handler's own).
_NEXUS_ENDS: dict[EventType.ValueType, tuple[str, StepStatus, bool, str | None]] = {
    EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED: (
        "nexus_operation_completed_event_attributes",
        StepStatus.SUCCEEDED,
        False,
        None,
    ),
    EventType.EVENT_TYPE_NEXUS_OPERATION_FAILED: (
        "nexus_operation_failed_event_attributes",
        StepStatus.FAILED,
        False,
        None,
    ),
    EventType.EVENT_TYPE_NEXUS_OPERATION_CANCELED: (
        "nexus_operation_canceled_event_attributes",
        StepStatus.CANCELLED,
        True,
        "cancelled",
    ),
    EventType.EVENT_TYPE_NEXUS_OPERATION_TIMED_OUT: (
        "nexus_operation_timed_out_event_attributes",
        StepStatus.FAILED,
        True,
        "timed out",
    ),
}


async def _decode(converter: DataConverter, payloads: Sequence[Payload], kind: type) -> Any:
    [value] = await converter.decode(payloads, [kind])
    return value


async def _summary(event: HistoryEvent, converter: DataConverter) -> tuple[str, bool]:
    """An event's summary ("" if none), and whether it is the engine's public text."""
    if not event.user_metadata.HasField("summary"):
        return "", False
    payload = event.user_metadata.summary
    return await _decode(converter, [payload], str), is_public(payload)


async def _event_name(payloads: Sequence[Payload], converter: DataConverter) -> str | None:
    """The event a ``saga_event`` Update or Signal brought (None: encrypted, no key)."""
    try:
        sent: SendEvent = await _decode(converter, payloads, SendEvent)
    except (KeyError, ValueError):
        return None
    return sent.event


async def _read(
    events: Sequence[HistoryEvent], converter: DataConverter, workflow_id: str | None
) -> _Rebuild:
    found = _Rebuild()
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            found.started_at = _time(event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            summary, public = await _summary(event, converter)
            found.activities[event.event_id] = _Activity(
                event.activity_task_scheduled_event_attributes.activity_id,
                summary,
                _time(event),
                public,
            )
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            found.activities[started.scheduled_event_id].attempts = started.attempt
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = found.activities[
                event.activity_task_completed_event_attributes.scheduled_event_id
            ]
            done.outcome, done.ended_at = StepStatus.SUCCEEDED, _time(event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            attrs = event.activity_task_failed_event_attributes
            done = found.activities[attrs.scheduled_event_id]
            done.outcome, done.ended_at = StepStatus.FAILED, _time(event)
            done.error = _failure_message(attrs.failure)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            timed_out = event.activity_task_timed_out_event_attributes
            done = found.activities[timed_out.scheduled_event_id]
            done.outcome, done.ended_at, done.uncertain = StepStatus.FAILED, _time(event), True
            done.error = _failure_message(timed_out.failure)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            cancelled = event.activity_task_canceled_event_attributes
            done = found.activities[cancelled.scheduled_event_id]
            done.outcome, done.ended_at, done.uncertain = StepStatus.CANCELLED, _time(event), True
            done.error = "cancelled"
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            child_id = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            if workflow_id is None or not child_id.startswith(f"{workflow_id}/"):
                continue  # not recognisable as a step (see state_from_history)
            summary, public = await _summary(event, converter)
            found.activities[event.event_id] = _Activity(
                child_id.removeprefix(f"{workflow_id}/"), summary, _time(event), public
            )
        elif kind in _CHILD_ENDS:
            _ended(found, event, _CHILD_ENDS[kind], "initiated_event_id", root_cause=False)
        elif kind == EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED:
            ident = event.nexus_operation_scheduled_event_attributes.nexus_header.get(
                NEXUS_STEP_HEADER
            )
            if ident is None or parse_step_id(ident) is None:
                continue  # the workflow's own Nexus call, not a step
            summary, public = await _summary(event, converter)
            found.activities[event.event_id] = _Activity(ident, summary, _time(event), public)
        elif kind in _NEXUS_ENDS:
            _ended(found, event, _NEXUS_ENDS[kind], "scheduled_event_id", root_cause=True)
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            summary, public = await _summary(event, converter)
            waits = parse_event_timer_summary(summary) if public else None
            if waits is not None:
                step, name = waits
                timeout = event.timer_started_event_attributes.start_to_fire_timeout
                found.activities[event.event_id] = _Activity(
                    step.step_id,
                    step.step,
                    _time(event),
                    public,
                    event=name,
                    timeout=timeout.ToTimedelta(),
                )
        elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
            waited = found.activities.get(event.timer_fired_event_attributes.started_event_id)
            if waited is not None and waited.timeout is not None:
                waited.outcome, waited.ended_at = StepStatus.FAILED, _time(event)
                waited.error = f"no {waited.event!r} event within {duration(waited.timeout)}"
        elif kind == EventType.EVENT_TYPE_TIMER_CANCELED:
            waited = found.activities.get(event.timer_canceled_event_attributes.started_event_id)
            if waited is not None:
                waited.ended_at = _time(event)
                if waited.event in found.events or None in found.events:
                    waited.outcome = StepStatus.SUCCEEDED  # its event came
                else:  # the saga stopped the wait
                    waited.outcome, waited.uncertain = StepStatus.CANCELLED, True
                    waited.error = "cancelled"
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes
            if signal.signal_name == SAGA_EVENT:
                found.events.add(await _event_name(signal.input.payloads, converter))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == SAGA_EVENT:
                found.events.add(await _event_name(request.input.args.payloads, converter))
            if request.input.name in ACTIONS:
                action, model = ACTIONS[request.input.name]
                try:
                    decoded = await _decode(converter, request.input.args.payloads, model)
                except (KeyError, ValueError):
                    decoded = None
                found.updates[event.event_id] = _Update(
                    action, decoded, request.meta.identity, _time(event)
                )
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            completed = event.workflow_execution_update_completed_event_attributes
            update = found.updates.get(completed.accepted_event_id)
            if update is not None and completed.outcome.HasField("success"):
                with contextlib.suppress(KeyError, ValueError):
                    payloads = completed.outcome.success.payloads
                    update.answer = await _decode(converter, payloads, str)
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if any(
                NEEDS_HUMAN_PATCH.encode() in p.data for d in details.values() for p in d.payloads
            ):
                found.waited_for_a_human = True
        elif kind in _CLOSING:
            found.closed, found.ended_at = kind, _time(event)
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                found.failure = event.workflow_execution_failed_event_attributes.failure
    return found


def _ended(
    found: _Rebuild,
    event: HistoryEvent,
    end: tuple[str, StepStatus, bool, str | None],
    started_by: str,
    *,
    root_cause: bool,
) -> None:
    """A child workflow's or Nexus operation's last event (``_CHILD_ENDS``,
    ``_NEXUS_ENDS``): the step's outcome; a failure's message is the child's own, or
    (``root_cause``: a Nexus operation's) its root cause's, the handler's error."""
    attrs_name, outcome, uncertain, error = end
    attrs = getattr(event, attrs_name)
    ended = found.activities.get(getattr(attrs, started_by))
    if ended is None:
        return  # not recognisable as a step
    ended.outcome, ended.ended_at, ended.uncertain = outcome, _time(event), uncertain
    if outcome is StepStatus.FAILED and error is None:
        failure = _innermost(attrs.failure) if root_cause else attrs.failure
        error = _failure_message(failure)
    ended.error = error


async def state_from_history(
    events: Sequence[HistoryEvent], converter: DataConverter, *, workflow_id: str | None = None
) -> SagaState:
    """Rebuild the state of the saga that ran in a workflow, from its history events.

    When the workflow ran a saga more than once (a retry loop), this is the last run.

    Args:
        events: The workflow's history events, oldest first.
        converter: The client's data converter (to decode summaries and details).
            Without the key of encrypted details, the state comes from the events
            alone: step names, outcomes and error messages are public text.
        workflow_id: The saga workflow's id, which starts the ids of steps that are
            child workflows (nested sagas); without it such steps are left out.

    Raises:
        NotASaga: No saga step was ever scheduled in this workflow.
    """
    found = await _read(events, converter, workflow_id)
    try:
        saga, steps, undo = _last_saga_run(found)
    except NotASaga:
        failure = found.failure
        if failure is None or not failure.HasField("application_failure_info"):
            raise
        # A saga refused before its first step (a SagaDefinitionError, say): say why.
        kind = failure.application_failure_info.type or "an error"
        raise NotASaga(
            f"no saga step ran: the workflow failed first, {kind}: {failure.message}"
        ) from None
    details = await _failure_details(found.failure, converter)
    if details is not None and details.omitted_steps == 0:
        # The saga's own final state; history adds what workflow code cannot see.
        return details.model_copy(
            update={"steps": [_with_attempts(s, steps, undo) for s in details.steps]}
        )

    step_states = [_step_state(step, undo) for step in steps.values()]
    compensations = [undo[k] for k in steps if k in undo]
    failures = sorted(
        (s for s in step_states if s.outcome is StepStatus.FAILED),
        key=lambda s: s.ended_at or found.ended_at or datetime.max.replace(tzinfo=UTC),
    )
    failed = failures[0] if failures else None
    reason = failed.error if failed is not None else None
    pivot: str | None = None
    closed = found.closed
    if closed in _INTERRUPTED:
        reason, failed = _INTERRUPTED[closed], None
    elif closed == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        reason, failed = "saga cancelled", None
    elif details is not None:
        # A large saga's bounded failure state: its verdict and its steps hold.
        reason, pivot = details.reason, details.pivot
        failed = next((s for s in step_states if s.name == details.failed_step), None)
        known = {s.name: s for s in details.steps}
        step_states = [
            _with_attempts(known.pop(s.name), steps, undo) if s.name in known else s
            for s in step_states
        ]
        step_states = _mark_after_pivot(step_states, pivot, []) + list(known.values())
    elif found.failure is not None and found.failure.application_failure_info.type == "SagaFailed":
        message = found.failure.message
        failed = next((s for s in failures if message.startswith(f"{s.name}: ")), None)
        reason, pivot, human = SagaFailed.parse_message(message, failed.name if failed else None)
        step_states = _mark_after_pivot(step_states, pivot, human)

    step_states, actions = _operators(found, step_states)
    if closed is None:
        status = SagaStatus.COMPENSATING if compensations else SagaStatus.RUNNING
        undoing = any(c.outcome is StepStatus.RUNNING for c in compensations)
        if found.waited_for_a_human and not undoing:
            status = SagaStatus.NEEDS_HUMAN
    elif closed in _INTERRUPTED:
        status = SagaStatus.INTERRUPTED
    elif reason is None and not compensations:
        status = SagaStatus.SUCCEEDED
    else:  # the saga failed (also when the workflow caught SagaFailed and completed)
        status = SagaStatus.COMPENSATED
    state = SagaState(
        name=saga,
        status=status,
        steps=step_states,
        failed_step=failed.name if failed and reason else None,
        reason=reason if status is not SagaStatus.SUCCEEDED else None,
        pivot=pivot,
        started_at=found.started_at,
        ended_at=found.ended_at,
        actions=actions,
    )
    undone_badly = any(
        s.compensation is not None
        and s.compensation.status is not StepStatus.SUCCEEDED
        and s.resolved is None
        for s in step_states
    )
    if status is SagaStatus.COMPENSATED and (undone_badly or state.needs_human):
        return state.model_copy(update={"status": SagaStatus.COMPENSATION_FAILED})
    return state


# Workflow ends that stop a saga wherever it was: nothing undoes what took effect.
_INTERRUPTED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "workflow terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "workflow timed out",
}


def _operators(
    found: _Rebuild, steps: list[StepState]
) -> tuple[list[StepState], list[OperatorAction]]:
    """The operators' actions in history, and the steps with what they resolved."""
    actions: list[OperatorAction] = []
    resolved: dict[str, str] = {}
    for update in found.updates.values():
        if update.answer is None:
            continue  # accepted, not answered yet (or its answer is unreadable)
        request = update.request
        step = getattr(request, "step", None)
        note = getattr(request, "note", None)
        if isinstance(request, ResolveStep):
            resolved[request.step] = request.note
        elif isinstance(request, RetryStep):
            note = update.answer.partition(": ")[2] or update.answer
        by = (request.by if request is not None else None) or update.identity or None
        actions.append(
            OperatorAction(action=update.action, step=step, note=note, by=by, at=update.at)
        )
    steps = [
        s.model_copy(update={"resolved": resolved[s.name]}) if s.name in resolved else s
        for s in steps
    ]
    return steps, actions


def _last_saga_run(found: _Rebuild) -> tuple[str, dict[str, _Activity], dict[str, _Activity]]:
    """The last saga run's name, its steps and their compensations, by step activity id.

    A step is an activity (or child) with a summary whose id is a step's (see
    ``_protocol``); its summary is the step's label, public text, or (before labels)
    its name. A compensation has its step's id plus ``/compensate``.
    """
    steps: dict[str, _Activity] = {}
    runs: dict[str, str] = {}  # each step's saga run, as written in its id
    names: dict[str, str] = {}
    for activity in found.activities.values():
        ident = parse_step_id(activity.activity_id)
        if ident is None or ident.compensation or not activity.summary:
            continue
        if activity.public or ident.step == activity.summary:
            steps[activity.activity_id] = activity
            runs[activity.activity_id], names[ident.saga_run] = ident.saga_run, ident.saga
    if not steps:
        raise NotASaga("no saga step in this workflow's history")
    last_run = runs[list(steps)[-1]]
    steps = {k: v for k, v in steps.items() if runs[k] == last_run}
    undo = {}
    for activity in found.activities.values():
        ident = parse_step_id(activity.activity_id)
        if ident is not None and ident.compensation and ident.step_id in steps:
            undo[ident.step_id] = activity
    return names[last_run], steps, undo


async def _failure_details(failure: Failure | None, converter: DataConverter) -> SagaState | None:
    """The state in a ``SagaFailed``'s details, or None (no such failure, or no key)."""
    if failure is None:
        return None
    info = failure.application_failure_info
    if info.type != "SagaFailed" or not info.details.payloads:
        return None
    try:
        state: SagaState = await _decode(converter, info.details.payloads, SagaState)
        return state
    except (KeyError, ValueError):
        return None  # encrypted, and no key here: the events alone tell the story


def _step_name(activity_id: str) -> str:
    ident = parse_step_id(activity_id)
    assert ident is not None  # a step's id (see _last_saga_run)
    return ident.step


def _step_state(step: _Activity, undo: dict[str, _Activity]) -> StepState:
    compensation = None
    if step.activity_id in undo:
        comp = undo[step.activity_id]
        compensation = CompensationState(
            name=comp.summary,
            # A cancelled compensation did not undo anything.
            status=StepStatus.FAILED if comp.outcome is StepStatus.CANCELLED else comp.outcome,
            order=list(undo).index(step.activity_id),
            started_at=comp.scheduled_at,
            ended_at=comp.ended_at,
            attempts=comp.attempts,
            error=comp.error,
        )
    name = _step_name(step.activity_id)
    return StepState(
        name=name,
        label=step.summary if step.summary != name else None,
        outcome=step.outcome,
        uncertain=step.uncertain,
        started_at=step.scheduled_at,
        ended_at=step.ended_at,
        attempts=step.attempts,
        error=step.error,
        compensation=compensation,
        event=step.event,
    )


def _with_attempts(
    state: StepState, steps: dict[str, _Activity], undo: dict[str, _Activity]
) -> StepState:
    """``state`` with the attempts that history recorded for it and its compensation."""
    activity_id = next((k for k in steps if _step_name(k) == state.name), None)
    if activity_id is None:
        return state
    update: dict[str, Any] = {"attempts": steps[activity_id].attempts}
    if state.compensation is not None and activity_id in undo:
        update["compensation"] = state.compensation.model_copy(
            update={"attempts": undo[activity_id].attempts}
        )
    return state.model_copy(update=update)


def _mark_after_pivot(
    steps: list[StepState], pivot: str | None, needs_human: list[str]
) -> list[StepState]:
    """Flag the steps after the pivot (scheduled once it had ended), and add those
    named as needing a human that never ran (history has no trace of them)."""
    ended = next((s.ended_at for s in steps if s.name == pivot), None)
    if pivot is None or ended is None:
        return steps
    marked = [
        s.model_copy(update={"after_pivot": True})
        if s.started_at is not None and s.started_at >= ended
        else s
        for s in steps
    ]
    seen = {s.name for s in steps}
    never_ran = [
        StepState(name=n, outcome=StepStatus.SKIPPED, after_pivot=True)
        for n in needs_human
        if n not in seen
    ]
    return marked + never_ran
