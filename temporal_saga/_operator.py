"""When a human is needed: the ``NEEDS_HUMAN`` wait and the operators' Workflow Updates.

A saga whose compensation failed for good (or that failed past its pivot) has undone
all a machine can. Rather than close, it keeps its workflow open in status
``NEEDS_HUMAN`` and takes commands as Workflow Updates, each validated (a wrong step
is rejected without touching history), recorded in history and answered:

* ``saga_retry`` (:class:`RetryStep`): run that compensation (or step after the
  pivot) again, with a new argument if given;
* ``saga_resolve`` (:class:`ResolveStep`): the operator finished it by hand;
* ``saga_give_up`` (:class:`GiveUp`): end now, ``COMPENSATION_FAILED``.

When nothing needs a human any more the saga ends ``COMPENSATED`` (or, failed past
the pivot and finished by operators, ``SUCCEEDED``). ``human_timeout`` bounds the wait,
and a cancel of the workflow ends it; both end ``COMPENSATION_FAILED`` as a saga
without the wait does. Sagas that ended before this existed replay as they ran
(patched).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._handlers import set_update_handlers, update_definition
from ._publish import PublishedSaga
from ._run import run_state
from ._state import OperatorAction, SagaStatus, StepStatus
from ._step import Step

#: The Workflow Updates an operator sends to a saga that needs a human.
SAGA_RETRY_UPDATE = "saga_retry"
SAGA_RESOLVE_UPDATE = "saga_resolve"
SAGA_GIVE_UP_UPDATE = "saga_give_up"

NEEDS_HUMAN_PATCH = "temporal-saga/needs-human"

# An action's ``by`` and note are public text (the trace shows them): keep them short.
_TEXT = Field(min_length=1, max_length=500)


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str | None = Field(default=None, max_length=200)
    saga: str | None = None  # which saga, when several in one workflow need a human


class RetryStep(_Request):
    """Input of ``saga_retry``: run a failed compensation (or a step after the pivot)
    again. ``arg``, when given (even as null), replaces the argument it ran with.

    From the ``temporal`` CLI: ``--input '{"step": "book hotel room", "by": "alice"}'``.
    """

    step: str
    arg: Any = None

    @model_serializer(mode="wrap")
    def _without_unset_arg(self, handler: SerializerFunctionWrapHandler) -> Any:
        # On the wire, no "arg" means the same argument; "arg": null means None.
        data = handler(self)
        if "arg" not in self.model_fields_set:
            data.pop("arg", None)
        return data


class ResolveStep(_Request):
    """Input of ``saga_resolve``: the operator finished ``step`` by hand; ``note`` says how."""

    step: str
    note: str = _TEXT


class GiveUp(_Request):
    """Input of ``saga_give_up``: stop waiting; the saga ends ``COMPENSATION_FAILED``."""

    note: str = _TEXT


#: Each operator update: the action it records (``OperatorAction.action``), its input.
ACTIONS: dict[str, tuple[str, type[RetryStep | ResolveStep | GiveUp]]] = {
    SAGA_RETRY_UPDATE: ("retry", RetryStep),
    SAGA_RESOLVE_UPDATE: ("resolve", ResolveStep),
    SAGA_GIVE_UP_UPDATE: ("give up", GiveUp),
}


def _sagas() -> list[OperatedSaga]:
    """This workflow run's sagas that take operator Updates (the workflow's handlers are
    registered once per run and find the saga an Update is for)."""
    sagas: list[OperatedSaga] = run_state().sagas
    return sagas


def _waiting_saga(request: _Request, step: str | None = None) -> OperatedSaga:
    """The saga an update is for (a ``ValueError`` rejects the update)."""
    sagas = [s for s in _sagas() if request.saga in (None, s.name)]
    waiting = [s for s in sagas if s._status is SagaStatus.NEEDS_HUMAN and not s._human_done]
    if not waiting:
        found = ", ".join(f"{s.name!r} is {s._status.value}" for s in sagas) or "no saga"
        raise ValueError(f"no saga here waits for a human ({found})")
    if step is not None:
        waiting = [s for s in waiting if step in s._steps] or waiting
    if len(waiting) > 1:
        names = ", ".join(repr(s.name) for s in waiting)
        raise ValueError(f"several sagas wait for a human ({names}): say which with saga=")
    return waiting[0]


def _target(request: RetryStep | ResolveStep) -> tuple[OperatedSaga, Step[Any]]:
    saga = _waiting_saga(request, request.step)
    if request.step in saga._retrying:
        raise ValueError(f"saga {saga.name!r}: {request.step!r} is being retried already")
    needed = saga.state.needs_human
    if request.step not in needed:
        raise ValueError(
            f"saga {saga.name!r}: step {request.step!r} does not need a human; "
            f"these do: {', '.join(needed)}"
        )
    return saga, saga._steps[request.step]


def _validate_retry(request: RetryStep) -> None:
    saga, step = _target(request)
    saga._retry_refusal(step)


async def _retry(request: RetryStep) -> str:
    saga, step = _target(request)  # the validator ran; the state may have moved since
    return await saga._retry(step, request)


def _validate_resolve(request: ResolveStep) -> None:
    _target(request)


def _resolve(request: ResolveStep) -> str:
    saga, step = _target(request)
    step._resolved = request.note
    saga._record("resolve", request, step=step.name, note=request.note)
    saga._publish(step)
    return f"{step.name}: resolved by hand"


def _validate_give_up(request: GiveUp) -> None:
    _waiting_saga(request)


def _give_up(request: GiveUp) -> str:
    saga = _waiting_saga(request)
    saga._record("give up", request, note=request.note)
    saga._human_done = True
    return f"saga {saga.name!r} gives up: it ends {SagaStatus.COMPENSATION_FAILED.value}"


# The operator Updates, defined once with their types (see _handlers).
_UPDATES = (
    update_definition(SAGA_RETRY_UPDATE, _retry, _validate_retry, RetryStep, str),
    update_definition(SAGA_RESOLVE_UPDATE, _resolve, _validate_resolve, ResolveStep, str),
    update_definition(SAGA_GIVE_UP_UPDATE, _give_up, _validate_give_up, GiveUp, str),
)


class OperatedSaga(PublishedSaga):
    """The operator half of :class:`temporal_saga.Saga`: waiting for a human."""

    _retrying: dict[str, asyncio.Task[Any]]  # steps whose retry runs now, and its task
    _human_done = False  # given up, timed out or cancelled: stop waiting
    _cancel_requested = False  # the workflow was cancelled while the saga wound down

    # The scheduler's (Saga's): run a step, or undo one.
    async def _execute(self, step: Step[Any]) -> None:
        raise NotImplementedError

    async def _undo(
        self, step: Step[Any], *, args: list[Any] | None = None, order: int | None = None
    ) -> None:
        raise NotImplementedError

    def _begin_publishing(self) -> None:
        self._retrying = {}
        sagas = _sagas()
        if not sagas:
            set_update_handlers(_UPDATES)
        sagas.append(self)
        super()._begin_publishing()

    def _record(self, action: str, request: _Request | None = None, **fields: Any) -> None:
        by = request.by if request is not None else None
        action_done = OperatorAction(action=action, by=by, at=workflow.now(), **fields)
        self._actions = (*self._actions, action_done)
        self._publish()

    async def _wait_for_human(self) -> None:
        """If steps need a human, wait in ``NEEDS_HUMAN`` until none does, an operator
        gives up, ``human_timeout`` passes or the workflow is cancelled."""
        if (
            not self.state.needs_human
            or self._cancel_requested  # the cancel takes effect once the undo is done
            or self._human_timeout == timedelta()
            or not workflow.patched(NEEDS_HUMAN_PATCH)
        ):
            return
        self._set_status(SagaStatus.NEEDS_HUMAN)
        self._metrics.needs_human_entered()
        expiry = None
        if self._human_timeout is not None:
            expiry = asyncio.create_task(workflow.sleep(self._human_timeout))
        try:
            while True:
                # What operators finished past the pivot lets the steps after it go on.
                ready = self._ready_after_pivot()
                if ready:
                    await asyncio.gather(*(self._execute(step) for step in ready))
                    continue
                if not self.state.needs_human and not self._retrying:
                    how = "resolved"
                    break
                await workflow.wait_condition(
                    functools.partial(self._woken, expiry, len(self._actions))
                )
                if self._human_done or self._cancel_requested or (expiry and expiry.done()):
                    how = self._stop_waiting(expiry)
                    for retry in self._retrying.values():
                        retry.cancel()  # its activity is cancelled: it failed again
                    await workflow.wait_condition(lambda: not self._retrying)
                    break
        finally:
            if expiry is not None:
                expiry.cancel()
        self._human_done = True
        self._metrics.needs_human_left(how)

    def _woken(self, expiry: asyncio.Task[None] | None, actions_seen: int) -> bool:
        """Whether the wait has something to look at: the end of it, or a new action
        (every action, and every retry once it ends, records one)."""
        return (
            self._human_done
            or self._cancel_requested
            or (expiry is not None and expiry.done())
            or (not self._retrying and len(self._actions) != actions_seen)
        )

    def _stop_waiting(self, expiry: asyncio.Task[None] | None) -> str:
        """Why the wait ends though steps still need a human; recorded as an action."""
        if self._human_done:
            return "given_up"
        if self._cancel_requested:
            self._record("cancel", note="the workflow was cancelled")
            return "cancelled"
        self._record("time out", note=f"no operator acted within {self._human_timeout}")
        return "timed_out"

    def _ready_after_pivot(self) -> list[Step[Any]]:
        """Steps after the pivot that never ran and whose dependencies are now done."""
        if not self._past_pivot:
            return []
        return [
            step
            for step in self._steps.values()
            if step._after_pivot
            and step._outcome is StepStatus.SKIPPED
            and step._note is None
            and step._resolved is None
            and all(_done(dep) for dep in step._deps)
        ]

    def _retry_refusal(self, step: Step[Any]) -> None:
        """Reject (ValueError) a retry of a step that cannot be retried now."""
        where = f"saga {self._name!r}, step {step.name!r}"
        if step._compensation is not None:
            return  # its compensation failed for good: run it again
        if not step._after_pivot or step._nested_needs_human:
            raise ValueError(
                f"{where} cannot be retried (a nested saga or a pivot of unknown "
                "outcome): finish it by hand, then resolve it"
            )
        waiting = [dep.name for dep in step._deps if not _done(dep)]
        if waiting:
            raise ValueError(f"{where} waits for {', '.join(waiting)}: retry or resolve it first")

    async def _retry(self, step: Step[Any], request: RetryStep) -> str:
        new_arg = "arg" in request.model_fields_set
        task = asyncio.current_task()
        assert task is not None
        self._retrying[step.name] = task
        try:
            if step._compensation is not None:
                args = ([] if request.arg is None else [request.arg]) if new_arg else None
                await self._undo(step, args=args, order=step._compensation.order)
                ok = step._compensation.status is StepStatus.SUCCEEDED
                what, answer = step._compensation.name, "compensated"
                error = step._compensation.error
            else:
                if new_arg:
                    step._arg = request.arg
                step._uncertain, step._error, step._note = False, None, None
                await self._execute(step)
                ok = step._outcome is StepStatus.SUCCEEDED
                what, answer, error = step.shown, "succeeded", step._error
        except workflow.NondeterminismError:
            raise
        except Exception as err:  # a bug in the saga's own code: the update fails
            raise ApplicationError(f"{step.name}: retry failed: {type(err).__name__}") from None
        finally:
            del self._retrying[step.name]
        if not ok:
            answer = f"failed again: {error}"
        self._record("retry", request, step=step.name, note=answer)
        return f"{what}: {answer}"


def _done(step: Step[Any]) -> bool:
    return step._outcome is StepStatus.SUCCEEDED or step._resolved is not None
