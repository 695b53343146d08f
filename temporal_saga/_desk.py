"""When a human is needed: the ``NEEDS_HUMAN`` wait and the operators' Workflow Updates.

A saga whose compensation failed for good (or that failed past its pivot) has undone
all a machine can. Rather than close, it keeps its workflow open in status
``NEEDS_HUMAN`` and takes commands as Workflow Updates, each validated (a wrong step
is rejected without touching history), recorded in history and answered:

* ``saga_retry`` (``RetryStep``): run that compensation (or step after the
  pivot) again, with a new argument if given;
* ``saga_resolve`` (``ResolveStep``): the operator finished it by hand (and may give
  its result, which the steps after it read: an event step's payload);
* ``saga_give_up`` (``GiveUp``): end now, ``COMPENSATION_FAILED``.

When nothing needs a human any more the saga ends ``COMPENSATED`` (or, failed past
the pivot and finished by operators, ``SUCCEEDED``). ``human_timeout`` bounds the wait,
and a cancel of the workflow ends it; both end ``COMPENSATION_FAILED`` as a saga
without the wait does. Sagas that ended before this existed replay as they ran
(patched).

The desk owns none of the saga's steps: it asks the scheduler to run a step or a
compensation again, or to record one as resolved, and the publisher to record what
operators did. The Updates' names and request models are the wire contract's
(``_protocol``).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._definition import SagaDefinition
from ._progress import SagaProgress
from ._protocol import (
    FAILED_AGAIN,
    NEEDS_HUMAN_PATCH,
    SAGA_GIVE_UP_UPDATE,
    SAGA_RESOLVE_UPDATE,
    SAGA_RETRY_UPDATE,
    GiveUp,
    Request,
    ResolveStep,
    RetryStep,
)
from ._publisher import Publisher
from ._sdk import RunState, run_state, set_update_handlers, update_definition
from ._state import SagaStatus, StepStatus
from ._step import Step
from ._trace import duration

if TYPE_CHECKING:
    from ._scheduler import Scheduler


def _desks() -> list[OperatorDesk]:
    """This workflow run's sagas' desks (the workflow's Update handlers are registered
    once per run and find the desk an Update is for)."""
    desks: list[OperatorDesk] = run_state().desks
    return desks


def _waiting_desk(request: Request, step: str | None = None) -> OperatorDesk:
    """The desk of the saga an update is for (a ``ValueError`` rejects the update)."""
    desks = [d for d in _desks() if request.saga in (None, d.name)]
    waiting = [d for d in desks if d.waiting]
    if not waiting:
        found = ", ".join(f"{d.name!r} is {d.status.value}" for d in desks) or "no saga"
        raise ValueError(f"no saga here waits for a human ({found})")
    if step is not None:
        waiting = [d for d in waiting if step in d.steps] or waiting
    if len(waiting) > 1:
        names = ", ".join(repr(d.name) for d in waiting)
        raise ValueError(f"several sagas wait for a human ({names}): say which with saga=")
    return waiting[0]


def _target(request: RetryStep | ResolveStep) -> tuple[OperatorDesk, Step[Any]]:
    desk = _waiting_desk(request, request.step)
    if request.step in desk.retrying:
        raise ValueError(f"saga {desk.name!r}: {request.step!r} is being retried already")
    needed = desk.needs_human
    if request.step not in needed:
        raise ValueError(
            f"saga {desk.name!r}: step {request.step!r} does not need a human; "
            f"these do: {', '.join(needed)}"
        )
    return desk, desk.steps[request.step]


def _validate_retry(request: RetryStep) -> None:
    desk, step = _target(request)
    desk.check_retry(step)


async def _retry(request: RetryStep) -> str:
    desk, step = _target(request)  # the validator ran; the state may have moved since
    return await desk.retry(step, request)


def _validate_resolve(request: ResolveStep) -> None:
    desk, step = _target(request)
    desk.result_of(step, request)


def _resolve(request: ResolveStep) -> str:
    desk, step = _target(request)
    return desk.resolve(step, request)


def _validate_give_up(request: GiveUp) -> None:
    _waiting_desk(request)


def _give_up(request: GiveUp) -> str:
    return _waiting_desk(request).give_up(request)


# The operator Updates, defined once with their types (see _sdk).
_UPDATES = (
    update_definition(SAGA_RETRY_UPDATE, _retry, _validate_retry, RetryStep, str),
    update_definition(SAGA_RESOLVE_UPDATE, _resolve, _validate_resolve, ResolveStep, str),
    update_definition(SAGA_GIVE_UP_UPDATE, _give_up, _validate_give_up, GiveUp, str),
)


class OperatorDesk:
    """Where a saga that needs a human waits for operators, and takes their actions."""

    def __init__(
        self,
        definition: SagaDefinition,
        progress: SagaProgress,
        publisher: Publisher,
        scheduler: Scheduler,
    ) -> None:
        self._definition = definition
        self._progress = progress
        self._publisher = publisher
        self._scheduler = scheduler
        self.retrying: dict[str, asyncio.Task[Any]] = {}  # steps whose retry runs now
        self._closed = False  # given up, timed out or cancelled: stop waiting

    def open(self, run: RunState) -> None:
        """Take this workflow run's operator Updates (registered with its first saga)."""
        if not run.desks:
            set_update_handlers(_UPDATES)
        run.desks.append(self)

    @property
    def name(self) -> str:
        return self._definition.name

    @property
    def status(self) -> SagaStatus:
        return self._progress.status

    @property
    def steps(self) -> dict[str, Step[Any]]:
        return self._definition.by_name

    @property
    def waiting(self) -> bool:
        """Whether the saga waits for a human now."""
        return self._progress.status is SagaStatus.NEEDS_HUMAN and not self._closed

    @property
    def needs_human(self) -> list[str]:
        return self._publisher.state.needs_human

    async def wait_for_human(self) -> None:
        """If steps need a human, wait in ``NEEDS_HUMAN`` until none does, an operator
        gives up, ``human_timeout`` passes or the workflow is cancelled."""
        human_timeout = self._definition.human_timeout
        if (
            not self.needs_human
            or self._progress.cancel_requested  # the cancel takes effect once the undo is done
            or human_timeout == timedelta()
            or not workflow.patched(NEEDS_HUMAN_PATCH)
        ):
            return
        self._publisher.set_status(SagaStatus.NEEDS_HUMAN)
        self._publisher.metrics.needs_human_entered()
        expiry = None
        if human_timeout is not None:
            expiry = asyncio.create_task(workflow.sleep(human_timeout))
        try:
            while True:
                # What operators finished past the pivot lets the steps after it go on.
                ready = self._ready_after_pivot()
                if ready:
                    await asyncio.gather(*(self._scheduler.execute(step) for step in ready))
                    continue
                if not self.needs_human and not self.retrying:
                    how = "resolved"
                    break
                await workflow.wait_condition(
                    functools.partial(self._woken, expiry, len(self._progress.actions))
                )
                if self._closed or self._progress.cancel_requested or (expiry and expiry.done()):
                    how = self._stop_waiting()
                    for retry in self.retrying.values():
                        retry.cancel()  # its activity is cancelled: it failed again
                    await workflow.wait_condition(lambda: not self.retrying)
                    break
        finally:
            if expiry is not None:
                expiry.cancel()
        self._closed = True
        self._publisher.metrics.needs_human_left(how)

    def _woken(self, expiry: asyncio.Task[None] | None, actions_seen: int) -> bool:
        """Whether the wait has something to look at: the end of it, or a new action
        (every action, and every retry once it ends, records one)."""
        return (
            self._closed
            or self._progress.cancel_requested
            or (expiry is not None and expiry.done())
            or (not self.retrying and len(self._progress.actions) != actions_seen)
        )

    def _stop_waiting(self) -> str:
        """Why the wait ends though steps still need a human; recorded as an action."""
        if self._closed:
            return "given_up"
        if self._progress.cancel_requested:
            self._publisher.record("cancel", note="the workflow was cancelled")
            return "cancelled"
        human_timeout = self._definition.human_timeout
        assert human_timeout is not None  # the wait ended on its own: it has a bound
        self._publisher.record(
            "time out", note=f"no operator acted within {duration(human_timeout)}"
        )
        return "timed_out"

    def _ready_after_pivot(self) -> list[Step[Any]]:
        """Steps after the pivot that never ran and whose dependencies are now done."""
        if not self._publisher.past_pivot:
            return []
        return [
            step
            for step in self._definition.by_name.values()
            if step._after_pivot
            and step._progress.outcome is StepStatus.SKIPPED
            and step._progress.note is None
            and step._progress.resolved is None
            and all(_done(dep) for dep in step._deps)
        ]

    def check_retry(self, step: Step[Any]) -> None:
        """Reject (ValueError) a retry of a step that cannot be retried now."""
        where = f"saga {self.name!r}, step {step.name!r}"
        if step._progress.compensation is not None:
            return  # its compensation failed for good: run it again
        if not step._after_pivot or step._progress.nested_needs_human:
            raise ValueError(
                f"{where} cannot be retried (a nested saga or a pivot of unknown "
                "outcome): finish it by hand, then resolve it"
            )
        waiting = [dep.name for dep in step._deps if not _done(dep)]
        if waiting:
            raise ValueError(f"{where} waits for {', '.join(waiting)}: retry or resolve it first")

    async def retry(self, step: Step[Any], request: RetryStep) -> str:
        """Run the step's compensation, or the step after the pivot, again."""
        new_arg = (request.arg,) if "arg" in request.model_fields_set else None
        task = asyncio.current_task()
        assert task is not None
        self.retrying[step.name] = task
        progress = step._progress
        try:
            if progress.compensation is not None:
                await self._scheduler.retry_compensation(step, new_arg)
                assert progress.compensation is not None
                ok = progress.compensation.status is StepStatus.SUCCEEDED
                what, answer = progress.compensation.name, "compensated"
                error = progress.compensation.error
            else:
                await self._scheduler.retry_step(step, new_arg)
                ok = progress.outcome is StepStatus.SUCCEEDED
                what, answer, error = step.shown, "succeeded", progress.error
        except workflow.NondeterminismError:
            raise
        except Exception as err:  # a bug in the saga's own code: the update fails
            raise ApplicationError(f"{step.name}: retry failed: {type(err).__name__}") from None
        finally:
            del self.retrying[step.name]
        if not ok:
            answer = f"{FAILED_AGAIN}: {error}"
        self._publisher.record("retry", request, step=step.name, note=answer)
        return f"{what}: {answer}"

    def result_of(self, step: Step[Any], request: ResolveStep) -> tuple[Any] | None:
        """The result an operator gives a step they resolve, ``(result,)``, or None
        (``ValueError``: an event step's payload that does not validate)."""
        if "result" not in request.model_fields_set:
            return None
        wait = step._definition.event
        return (request.result if wait is None else wait.validate(request.result),)

    def resolve(self, step: Step[Any], request: ResolveStep) -> str:
        """The operator finished the step by hand (giving its result, maybe)."""
        self._scheduler.resolve(step, request.note, self.result_of(step, request))
        self._publisher.record("resolve", request, step=step.name, note=request.note)
        return f"{step.name}: resolved by hand"

    def give_up(self, request: GiveUp) -> str:
        """Stop waiting: the saga ends ``COMPENSATION_FAILED``."""
        self._publisher.record("give up", request, note=request.note)
        self._closed = True
        return f"saga {self.name!r} gives up: it ends {SagaStatus.COMPENSATION_FAILED.value}"


def _done(step: Step[Any]) -> bool:
    return step._progress.outcome is StepStatus.SUCCEEDED or step._progress.resolved is not None
