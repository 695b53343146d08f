"""What a running saga tells the world: its state, its live trace, its status.

Three views, kept up to date on every change of a step or of the saga:

* the ``saga_state`` query answers :class:`SagaState` (any client, at any time);
* the workflow's current details hold the live trace, which the Web UI shows on the
  workflow's page (no history cost);
* with ``search_attributes=True``, the ``SagaStatus`` search attribute (one history
  event per status change) lets ``temporal workflow list`` find sagas by status.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
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
from ._sdk import set_query_handler
from ._state import OperatorAction, SagaState, SagaStatus, StepStatus, bounded
from ._step import Step
from ._trace import action_line, assemble_trace, compensation_line, step_line
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
    step, :meth:`set_status` for the saga); it renders only what changed, and the
    trace once per workflow activation.
    """

    def __init__(self, definition: SagaDefinition, progress: SagaProgress) -> None:
        self._definition = definition
        self._progress = progress
        # The live trace's lines, kept up to date step by step (see publish).
        self._step_lines: list[str] = []
        self._compensation_lines: list[str] = []
        self._flush_pending = False
        # Made as the saga begins (they read the workflow's context).
        self.metrics: SagaMetrics
        self.spans: SagaSpans

    @property
    def past_pivot(self) -> bool:
        """The pivot succeeded: from here on the saga only goes forward."""
        pivot = self._definition.pivot
        return pivot is not None and pivot._progress.outcome is StepStatus.SUCCEEDED

    @property
    def state(self) -> SagaState:
        """A snapshot of the saga; also the answer to the ``saga_state`` query."""
        definition, progress = self._definition, self._progress
        return SagaState(
            name=definition.name,
            status=progress.status,
            steps=[step.state for step in definition.by_name.values()],
            failed_step=progress.failed_step.name if progress.failed_step else None,
            reason=progress.reason,
            pivot=definition.pivot.name if definition.pivot else None,
            started_at=progress.started_at,
            ended_at=progress.ended_at,
            actions=list(progress.actions),
        )

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
        pivot = self._pivot_name
        self._step_lines = [step_line(s, pivot) for s in self._definition.by_name.values()]
        self._progress.started_at = workflow.now()
        self.metrics = SagaMetrics(self._definition.name)
        self.spans = SagaSpans(self._definition.name)
        set_query_handler(SAGA_STATE_QUERY, lambda: self.state, SagaState)
        self.set_status(SagaStatus.RUNNING)

    @property
    def _pivot_name(self) -> str | None:
        pivot = self._definition.pivot
        return pivot.name if pivot else None

    def add_step(self, step: Step[Any]) -> None:
        """A step added while the saga runs (the imperative form) gets its line."""
        self._step_lines.append(step_line(step, self._pivot_name))

    def finish(self, status: SagaStatus) -> None:
        """The saga ended with ``status``."""
        progress = self._progress
        progress.ended_at = workflow.now()
        self.set_status(status)
        self.metrics.saga_ended(
            status, progress.ended_at - (progress.started_at or progress.ended_at)
        )
        self.spans.finish(status.value)

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
        done = OperatorAction(action=action, by=by, at=workflow.now(), **fields)
        self._progress.actions = (*self._progress.actions, done)
        self.publish()

    def publish(self, step: Step[Any] | None = None) -> None:
        """Show the live trace on the workflow's page in the Web UI (no history cost).

        Only the changed step's lines are re-rendered, and the text is assembled once
        per workflow activation (a callback that runs before the activation ends), so
        a long saga costs O(1) per step change, not O(steps).
        """
        if step is not None:
            progress = step._progress
            self._step_lines[step._definition.index] = step_line(step, self._pivot_name)
            if progress.compensation is not None:
                line = compensation_line(progress.compensation, progress.resolved)
                order = progress.compensation.order
                if order == len(self._compensation_lines):
                    self._compensation_lines.append(line)
                else:
                    self._compensation_lines[order] = line
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        progress = self._progress
        workflow.set_current_details(
            assemble_trace(
                self._step_lines,
                self._compensation_lines,
                status=progress.status,
                reason=progress.reason,
                failed_step=progress.failed_step.name if progress.failed_step else None,
                past_pivot=self.past_pivot,
                needs_human=self.state.needs_human if progress.status in _NEEDS_HUMAN_SAYS else (),
                action_lines=[action_line(action) for action in progress.actions],
            )
        )
