"""What a running saga tells the world: its state, its live trace, its status.

Three views, kept up to date on every change of a step or of the saga:

* the ``saga_state`` query answers :class:`SagaState` (any client, at any time);
* the workflow's current details hold the live trace, which the Web UI shows on the
  workflow's page (no history cost; rendered when read);
* with ``search_attributes=True``, the ``SagaStatus`` search attribute (one history
  event per status change) lets ``temporal workflow list`` find sagas by status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from ._definition import SagaDefinition
from ._errors import SagaDefinitionError
from ._limits import FULL_STATE_STEPS
from ._metrics import SagaMetrics
from ._progress import SagaProgress
from ._protocol import (
    CHECK_ATTRIBUTE_ACTIVITY,
    CHECK_ATTRIBUTE_PATCH,
    SAGA_STATE_QUERY,
    SAGA_STATUS_ATTRIBUTE,
    PublicText,
    Request,
)
from ._sdk import set_query_handler, show_details_from, workflow_clock
from ._state import OperatorAction, SagaState, SagaStatus, StepStatus, bounded
from ._step import Step
from ._trace import (
    action_line,
    assemble_trace,
    compensation_line,
    line_of,
    trace_without_failure,
)
from ._tracing import SagaSpans

# The statuses whose log line and trace name the steps that need a human: the log
# level, and what the line says after the status.
_NEEDS_HUMAN_SAYS = {
    SagaStatus.NEEDS_HUMAN: (logging.WARNING, ": waiting for an operator for: %s"),
    SagaStatus.COMPENSATION_FAILED: (logging.ERROR, "; needs a human: %s"),
}


class Publisher:
    """Keeps the world told of a saga: its state, its live trace, its status.

    The scheduler and the operator desk tell it what changed (:meth:`publish` for a
    step, :meth:`set_status` for the saga); it renders the trace when it is read,
    and then only the lines of what changed.
    """

    def __init__(self, definition: SagaDefinition, progress: SagaProgress) -> None:
        self._definition = definition
        self._progress = progress
        # The live trace's lines as last rendered (see trace), and the steps whose
        # lines changed since (each once: nobody may read the trace for a long while).
        self._step_lines: list[str] = []
        self._compensation_lines: list[str] = []
        self._changed: dict[Step[Any], None] = {}
        self._rendered_when_read = False  # see publish
        self._flush_pending = False
        # Made as the saga begins (they read the workflow's context).
        self.metrics: SagaMetrics
        self.spans: SagaSpans
        self.now: Callable[[], datetime]  # workflow.now, for less (see _sdk)

    @property
    def past_pivot(self) -> bool:
        """The pivot succeeded: from here on the saga only goes forward."""
        pivot = self._definition.pivot
        return pivot is not None and pivot._progress.outcome is StepStatus.SUCCEEDED

    @property
    def state(self) -> SagaState:
        """A snapshot of the saga; also the answer to the ``saga_state`` query."""
        return SagaState.model_validate(self.state_fields())

    def state_fields(self) -> dict[str, Any]:
        """The snapshot's fields, its steps' too: validated in one call (a model's own
        construction costs more than its fields' validation)."""
        definition, progress = self._definition, self._progress
        return {
            "name": definition.name,
            "status": progress.status,
            "steps": [step._state_fields() for step in definition.by_name.values()],
            "failed_step": progress.failed_step.name if progress.failed_step else None,
            "reason": progress.reason,
            "pivot": definition.pivot.name if definition.pivot else None,
            "started_at": progress.started_at,
            "ended_at": progress.ended_at,
            "actions": list(progress.actions),
        }

    def failure_state(self) -> SagaState:
        """The state ``SagaFailed`` carries: bounded, so a large saga's failure fits a payload."""
        return bounded(self.state, keep_all_up_to=FULL_STATE_STEPS)

    async def check_status_attribute(self) -> None:
        """With ``search_attributes=True``, fail at once if ``SagaStatus`` is unknown.

        Upserting an attribute the namespace lacks fails the workflow task, which then
        retries forever with nothing but a worker log line to say why. So before the
        first upsert, a local activity (registered by ``SagaPlugin``) asks the server;
        a saga that started before this check existed replays without it (patched).
        """
        if not self._definition.search_attributes or not workflow.patched(CHECK_ATTRIBUTE_PATCH):
            return
        try:
            await workflow.execute_local_activity(
                CHECK_ATTRIBUTE_ACTIVITY,
                SAGA_STATUS_ATTRIBUTE.name,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(
                    maximum_attempts=3,
                    non_retryable_error_types=["NotFoundError", "SearchAttributeNotRegistered"],
                ),
                summary=PublicText("check the SagaStatus search attribute"),
            )
            return
        except ValueError:  # the SDK's answer when the worker lacks the activity
            kind: str | None = "NotFoundError"
        # The SDK raises a local activity's ApplicationError as it is, or in an ActivityError.
        except (ActivityError, ApplicationError) as err:
            cause = err.cause if isinstance(err, ActivityError) else err
            if not isinstance(cause, ApplicationError):
                return  # the server unreachable for a while: upsert regardless
            kind = cause.type
            if kind == "SearchAttributeNotRegistered":
                raise SagaDefinitionError(
                    f"saga {self._definition.name!r}: {cause.message}"
                ) from None
        if kind == "NotFoundError":
            raise SagaDefinitionError(
                f"saga {self._definition.name!r}: search_attributes=True needs temporal-saga's "
                "plugin on the worker, to check that SagaStatus is registered: make the worker's "
                "client with temporal_saga.client.connect(), or pass "
                "plugins=[temporal_saga.client.SagaPlugin()] to Client.connect"
            )

    def begin(self) -> None:
        """Register the ``saga_state`` query and publish the first trace."""
        steps = list(self._definition.by_name.values())
        self._step_lines = [""] * len(steps)
        self._changed = dict.fromkeys(steps)  # rendered when first read
        self.now = workflow_clock()
        self._progress.started_at = self.now()
        self.metrics = SagaMetrics(self._definition.name)
        self.spans = SagaSpans(self._definition.name)
        set_query_handler(SAGA_STATE_QUERY, lambda: self.state, SagaState)
        self._rendered_when_read = show_details_from(self.trace)
        self.set_status(SagaStatus.RUNNING)

    def add_step(self, step: Step[Any]) -> None:
        """A step added while the saga runs (the imperative form) gets its line."""
        self._step_lines.append("")
        self.publish(step)

    def finish(self, status: SagaStatus) -> None:
        """The saga ended with ``status``."""
        progress = self._progress
        progress.ended_at = self.now()
        self.set_status(status)
        self.metrics.saga_ended(
            status, progress.ended_at - (progress.started_at or progress.ended_at)
        )
        self.spans.finish(status)

    def set_status(self, status: SagaStatus) -> None:
        """The saga's status changed: log it, upsert it (opt-in), publish it."""
        progress, name = self._progress, self._definition.name
        progress.status = status
        # workflow.logger is replay-aware: a replay logs nothing again.
        if status is SagaStatus.COMPENSATING:
            failed = f" ({progress.failed_step.name} failed)" if progress.failed_step else ""
            workflow.logger.warning(
                "saga %r: %s%s: %s", name, status.value, failed, progress.reason
            )
        elif status in _NEEDS_HUMAN_SAYS:
            level, says = _NEEDS_HUMAN_SAYS[status]
            needed = ", ".join(self.state.needs_human)
            workflow.logger.log(level, "saga %r: %s" + says, name, status.value, needed)
        else:
            workflow.logger.info("saga %r: %s", name, status.value)
        if self._definition.search_attributes:
            workflow.upsert_search_attributes([SAGA_STATUS_ATTRIBUTE.value_set(status.value)])
        self.publish()

    def record(self, action: str, request: Request | None = None, **fields: Any) -> None:
        """Record what an operator (or a timer, or a cancel) did while the saga waited."""
        by = request.by if request is not None else None
        done = OperatorAction(action=action, by=by, at=self.now(), **fields)
        self._progress.actions = (*self._progress.actions, done)
        self.publish()

    def publish(self, step: Step[Any] | None = None) -> None:
        """Something changed (``step``'s progress, or the saga's): the live trace will
        show it.

        The trace is rendered when it is read (the Web UI's query; see
        :meth:`trace`), so a saga pays nothing for it while nobody looks. Where the
        SDK does not allow that, it is rendered once per workflow activation (a
        callback that runs before the activation ends) and set as the current details.
        """
        if step is not None:
            self._changed[step] = None
        if not self._rendered_when_read and not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        workflow.set_current_details(self.trace())

    def trace(self) -> str:
        """The live trace, as the Web UI shows it on the workflow's page.

        Only the lines of steps that changed since the last rendering are rendered
        again, so a long saga costs O(1) per step change, not O(steps).
        """
        pivot, lines, undone = self._definition.pivot, self._step_lines, self._compensation_lines
        for step in self._changed:
            definition, done = step._definition, step._progress
            compensation = done.compensation
            lines[definition.index] = line_of(
                definition.label or definition.name,
                done.outcome,
                note=done.note,
                error=done.error,
                resolved=done.resolved if compensation is None else None,
                pivot=step is pivot,
            )
            if compensation is not None:
                while len(undone) <= compensation.order:
                    undone.append("")
                undone[compensation.order] = compensation_line(compensation, done.resolved)
        self._changed = {}
        progress = self._progress
        if progress.reason is None:
            text = trace_without_failure(lines, progress.status)
            if text is not None:
                return text
        return assemble_trace(
            lines,
            undone,
            status=progress.status,
            reason=progress.reason,
            failed_step=progress.failed_step.name if progress.failed_step else None,
            past_pivot=self.past_pivot,
            needs_human=self.state.needs_human if progress.status in _NEEDS_HUMAN_SAYS else (),
            action_lines=[action_line(action) for action in progress.actions],
        )
