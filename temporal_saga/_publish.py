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
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

from ._definition import SagaDefinition
from ._errors import SagaDefinitionError
from ._handlers import set_query_handler
from ._limits import FULL_STATE_STEPS
from ._metrics import SagaMetrics
from ._public import PublicText
from ._state import OperatorAction, SagaState, SagaStatus, StepStatus
from ._step import Step
from ._trace import action_line, assemble_trace, compensation_line, step_line
from ._tracing import SagaSpans

#: Name of the query that returns a running (or closed) saga's :class:`SagaState`.
SAGA_STATE_QUERY = "saga_state"

#: The Keyword search attribute a saga keeps its status in, with ``search_attributes=True``.
#: Register it first: ``temporal operator search-attribute create --name SagaStatus
#: --type Keyword`` (or ``temporal server start-dev --search-attribute SagaStatus=Keyword``).
SAGA_STATUS_ATTRIBUTE = SearchAttributeKey.for_keyword("SagaStatus")


# The statuses whose log line and trace name the steps that need a human: the log
# level, and what the line says after the status.
_NEEDS_HUMAN_SAYS = {
    SagaStatus.NEEDS_HUMAN: (logging.WARNING, ": waiting for an operator for: %s"),
    SagaStatus.COMPENSATION_FAILED: (logging.ERROR, "; needs a human: %s"),
}

#: The local activity that checks the attribute exists (see _check_status_attribute).
CHECK_ATTRIBUTE_ACTIVITY = "temporal_saga.check_search_attribute"
CHECK_ATTRIBUTE_PATCH = "temporal-saga/check-search-attribute"


class PublishedSaga(SagaDefinition):
    """The state half of :class:`temporal_saga.Saga`: what it did, and publishing it."""

    # What the saga did so far: the scheduler (Saga) changes these, then publishes.
    _status = SagaStatus.RUNNING
    _started_at: datetime | None = None
    _ended_at: datetime | None = None
    _metrics: SagaMetrics
    _spans: SagaSpans
    _failed_step: Step[Any] | None = None
    _reason: str | None = None
    # The live trace's lines, kept up to date step by step (see _publish).
    _step_lines: list[str]
    _compensation_lines: list[str]
    _flush_pending = False
    # What operators did while the saga waited for a human (see _operator).
    _actions: tuple[OperatorAction, ...] = ()

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
            actions=list(self._actions),
        )

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

    async def _check_status_attribute(self) -> None:
        """With ``search_attributes=True``, fail at once if ``SagaStatus`` is unknown.

        Upserting an attribute the namespace lacks fails the workflow task, which then
        retries forever with nothing but a worker log line to say why. So before the
        first upsert, a local activity (registered by ``SagaPlugin``) asks the server;
        a saga that started before this check existed replays without it (patched).
        """
        if not self._search_attributes or not workflow.patched(CHECK_ATTRIBUTE_PATCH):
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
                raise SagaDefinitionError(f"saga {self._name!r}: {cause.message}") from None
        if kind == "NotFoundError":
            raise SagaDefinitionError(
                f"saga {self._name!r}: search_attributes=True needs temporal-saga's plugin "
                "on the worker, to check that SagaStatus is registered: make the worker's "
                "client with temporal_saga.client.connect(), or pass "
                "plugins=[temporal_saga.client.SagaPlugin()] to Client.connect"
            )

    def _begin_publishing(self) -> None:
        """Register the ``saga_state`` query and publish the first trace."""
        self._step_lines = [step_line(s, self._pivot_name) for s in self._steps.values()]
        self._compensation_lines = []
        self._started_at = workflow.now()
        self._metrics = SagaMetrics(self._name)
        self._spans = SagaSpans(self._name)
        set_query_handler(SAGA_STATE_QUERY, lambda: self.state, SagaState)
        self._set_status(SagaStatus.RUNNING)

    def _fail(self, step: Step[Any] | None, reason: str) -> None:
        if self._reason is None:
            self._failed_step = step
            self._reason = reason

    def _finish(self, status: SagaStatus) -> None:
        self._ended_at = workflow.now()
        self._set_status(status)
        self._metrics.saga_ended(status, self._ended_at - (self._started_at or self._ended_at))
        self._spans.finish(status.value)

    def _set_status(self, status: SagaStatus) -> None:
        self._status = status
        # workflow.logger is replay-aware: a replay logs nothing again.
        if status is SagaStatus.COMPENSATING:
            failed = f" ({self._failed_step.name} failed)" if self._failed_step else ""
            workflow.logger.warning(
                "saga %r: %s%s: %s", self._name, status.value, failed, self._reason
            )
        elif status in _NEEDS_HUMAN_SAYS:
            level, says = _NEEDS_HUMAN_SAYS[status]
            needed = ", ".join(self.state.needs_human)
            workflow.logger.log(level, "saga %r: %s" + says, self._name, status.value, needed)
        else:
            workflow.logger.info("saga %r: %s", self._name, status.value)
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
                line = compensation_line(step._compensation, step._resolved)
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
        workflow.set_current_details(
            assemble_trace(
                self._step_lines,
                self._compensation_lines,
                status=self._status,
                reason=self._reason,
                failed_step=self._failed_step.name if self._failed_step else None,
                past_pivot=self._past_pivot,
                needs_human=self.state.needs_human if self._status in _NEEDS_HUMAN_SAYS else (),
                action_lines=[action_line(action) for action in self._actions],
            )
        )
