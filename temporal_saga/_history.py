"""Rebuild a saga's state from its workflow history alone (no worker needed).

A failed saga's last event carries its exact final state (``SagaFailed`` details).
Otherwise the state is read off the activities and child workflows: the saga
schedules each step with activity id ``<saga>/<step>`` and summary ``<step>``, and
each compensation with id ``<saga>/<step>/compensate`` and summary the
compensation's name; a step (or compensation) that is a child workflow has the
workflow id ``<saga workflow id>/<saga>/<step>`` (``/compensate``). Steps that never
started leave no trace in history, so a rebuilt state lists only steps that ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import DataConverter

from ._activity import COMPENSATION_SUFFIX
from ._errors import SagaFailed
from ._state import CompensationState, SagaState, SagaStatus, StepState, StepStatus


class NotASaga(ValueError):
    """The workflow's history holds no saga."""


@dataclass
class _Activity:
    """A step or compensation seen in history: an activity or a child workflow."""

    activity_id: str
    summary: str
    scheduled_at: datetime
    attempts: int | None = None
    ended_at: datetime | None = None
    outcome: StepStatus = StepStatus.RUNNING
    uncertain: bool = False
    error: str | None = None


@dataclass
class _Rebuild:
    activities: dict[int, _Activity] = field(default_factory=dict)
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


async def _decode(converter: DataConverter, payloads: Sequence[Payload], kind: type) -> Any:
    [value] = await converter.decode(payloads, [kind])
    return value


async def _read(
    events: Sequence[HistoryEvent], converter: DataConverter, workflow_id: str | None
) -> _Rebuild:
    found = _Rebuild()
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            found.started_at = _time(event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            summary = ""
            if event.user_metadata.HasField("summary"):
                summary = await _decode(converter, [event.user_metadata.summary], str)
            found.activities[event.event_id] = _Activity(
                event.activity_task_scheduled_event_attributes.activity_id, summary, _time(event)
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
            summary = ""
            if event.user_metadata.HasField("summary"):
                summary = await _decode(converter, [event.user_metadata.summary], str)
            found.activities[event.event_id] = _Activity(
                child_id.removeprefix(f"{workflow_id}/"), summary, _time(event)
            )
        elif kind in _CHILD_ENDS:
            attrs_name, outcome, uncertain, error = _CHILD_ENDS[kind]
            attrs = getattr(event, attrs_name)
            child = found.activities.get(attrs.initiated_event_id)
            if child is None:
                continue
            child.outcome, child.ended_at, child.uncertain = outcome, _time(event), uncertain
            if outcome is StepStatus.FAILED and error is None:
                error = _failure_message(attrs.failure)
            child.error = error
        elif kind in _CLOSING:
            found.closed, found.ended_at = kind, _time(event)
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                found.failure = event.workflow_execution_failed_event_attributes.failure
    return found


async def state_from_history(
    events: Sequence[HistoryEvent], converter: DataConverter, *, workflow_id: str | None = None
) -> SagaState:
    """Rebuild the state of the saga that ran in a workflow, from its history events.

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
    failure = found.failure
    if failure is not None:
        info = failure.application_failure_info
        if info.type == "SagaFailed" and info.details.payloads:
            try:
                state: SagaState = await _decode(converter, info.details.payloads, SagaState)
                return state
            except (KeyError, ValueError):
                pass  # encrypted, and no key here: the events alone tell the story

    # The saga's name is what a step's activity id has before "/<summary>".
    steps: dict[str, _Activity] = {}
    saga_name: str | None = None
    for activity in found.activities.values():
        suffix = f"/{activity.summary}"
        if activity.summary and activity.activity_id.endswith(suffix):
            saga_name = activity.activity_id.removesuffix(suffix)
            steps[activity.activity_id] = activity
    if saga_name is None:
        raise NotASaga("no saga step in this workflow's history")

    compensations = [
        a
        for a in found.activities.values()
        if a.activity_id.endswith(COMPENSATION_SUFFIX)
        and a.activity_id.removesuffix(COMPENSATION_SUFFIX) in steps
    ]
    undo = {
        a.activity_id.removesuffix(COMPENSATION_SUFFIX): (n, a) for n, a in enumerate(compensations)
    }
    step_states = []
    for activity_id, step in steps.items():
        compensation = None
        if activity_id in undo:
            order, comp = undo[activity_id]
            compensation = CompensationState(
                name=comp.summary,
                status=comp.outcome
                if comp.outcome is not StepStatus.CANCELLED
                else StepStatus.FAILED,
                order=order,
                started_at=comp.scheduled_at,
                ended_at=comp.ended_at,
                attempts=comp.attempts,
                error=comp.error,
            )
        step_states.append(
            StepState(
                name=step.summary,
                outcome=step.outcome,
                uncertain=step.uncertain,
                started_at=step.scheduled_at,
                ended_at=step.ended_at,
                attempts=step.attempts,
                error=step.error,
                compensation=compensation,
            )
        )

    failed = next(
        (s for s in step_states if s.outcome is StepStatus.FAILED),
        None,
    )
    reason: str | None = None
    closed = found.closed
    if closed == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        reason, failed = "saga cancelled", None
    elif closed == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        reason, failed = "workflow terminated", None
    elif closed == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        reason, failed = "workflow timed out", None
    elif failure is not None:
        reason = failure.message
        if failure.application_failure_info.type == "SagaFailed":
            reason = SagaFailed.reason_in(reason, failed.name if failed else None)
    elif failed is not None and compensations:
        reason = failed.error

    if closed == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        status = SagaStatus.SUCCEEDED
    elif any(c.outcome is not StepStatus.SUCCEEDED for c in compensations) and closed:
        status = SagaStatus.COMPENSATION_FAILED
    elif closed:
        status = SagaStatus.COMPENSATED
    else:
        status = SagaStatus.COMPENSATING if compensations else SagaStatus.RUNNING
    return SagaState(
        name=saga_name,
        status=status,
        steps=step_states,
        failed_step=failed.name if failed and reason else None,
        reason=reason,
        started_at=found.started_at,
        ended_at=found.ended_at,
    )
