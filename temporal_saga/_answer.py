"""The early answer: a caller learns as soon as a named step succeeded, or why not.

A web request that starts a saga cannot wait for all of it; it wants an answer once
the point of no return is passed ("order accepted", or why not) while the rest runs
durably. The ``saga_answer`` Workflow Update, sent with the workflow's start
(Update-with-Start: ``temporal_saga.client.start_until_step``), waits until its step
has succeeded and returns the step's result, or fails with ``SagaFailed`` (the saga's
state then) as soon as the saga failed before that step could count: it failed before
the step succeeded, or after, where the step is undone (a step at or past the pivot
is never undone: its success stands).

An Update sent with the start is handled before the workflow's code first runs, so
it must be registered before that: ``SagaPlugin``'s workflow interceptor does it as
each workflow run is created (:func:`take_early_answers`); a saga registers it too as
it begins, for workers without the plugin (where only Updates sent later find it).
Accepted before any saga began, it waits for one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow

from ._errors import SagaError, SagaFailed
from ._protocol import SAGA_ANSWER_UPDATE, AnswerWhen
from ._sdk import RunState, handler_tables, run_state, set_update_handlers, update_definition
from ._state import SagaStatus, StepStatus

if TYPE_CHECKING:
    from ._definition import SagaDefinition
    from ._progress import SagaProgress
    from ._publisher import Publisher
    from ._step import Step

_STANDS = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
_RUNNING = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.NEEDS_HUMAN)


def _answerers() -> list[Answerer]:
    answerers: list[Answerer] = run_state().answerers
    return answerers


def _route(request: AnswerWhen) -> Answerer:
    """The saga that has (or may still add) the step (``ValueError``: none here)."""
    answerers = [a for a in _answerers() if request.saga in (None, a.name)]
    found = [a for a in answerers if a.may_have(request.step)]
    if len(found) > 1:
        names = ", ".join(repr(a.name) for a in found)
        raise ValueError(
            f"several sagas have step {request.step!r} ({names}): say which with saga="
        )
    if not found:
        steps = ", ".join(repr(s) for a in answerers for s in a.steps) or "none"
        raise ValueError(f"no saga here has step {request.step!r} (its steps: {steps})")
    return found[0]


def _validate(request: AnswerWhen) -> None:
    if _answerers():  # else sent with the start: the saga has not begun yet
        _route(request)


async def _answer(request: AnswerWhen) -> Any:
    await workflow.wait_condition(lambda: bool(_answerers()))
    try:
        answerer = _route(request)
    except ValueError as err:  # found only once the saga began: the Update fails
        raise SagaError(str(err)) from None
    return await answerer.answer(request.step)


_UPDATE = update_definition(SAGA_ANSWER_UPDATE, _answer, _validate, AnswerWhen, object)


def take_early_answers() -> None:
    """Register this workflow run's ``saga_answer`` Update (once)."""
    tables = handler_tables()
    if tables is None:
        set_update_handlers((_UPDATE,))
    else:
        tables[1].setdefault(SAGA_ANSWER_UPDATE, _UPDATE)


class Answerer:
    """Answers ``saga_answer`` for one saga."""

    def __init__(
        self, definition: SagaDefinition, progress: SagaProgress, publisher: Publisher
    ) -> None:
        self._definition = definition
        self._progress = progress
        self._publisher = publisher

    @property
    def name(self) -> str:
        return self._definition.name

    @property
    def steps(self) -> list[str]:
        return list(self._definition.by_name)

    def open(self, run: RunState) -> None:
        """Take this workflow run's ``saga_answer`` Updates (registered with its first saga)."""
        if not run.answerers:
            take_early_answers()
        run.answerers.append(self)

    def may_have(self, step: str) -> bool:
        """Whether this saga has (or, its block running, may still add) ``step``."""
        definition = self._definition
        return step in definition.by_name or (definition.in_block and self._progress.reason is None)

    async def answer(self, name: str) -> Any:
        """The step's result once it stands; ``SagaFailed`` once it cannot."""
        await workflow.wait_condition(lambda: self._settled(name))
        step = self._definition.by_name.get(name)
        if step is not None and self._stands(step):
            return step._progress.result
        if self._progress.reason is None:  # the block ended without adding it
            raise SagaError(f"saga {self.name!r} ended without step {name!r}")
        raise SagaFailed(self._publisher.failure_state())

    def _settled(self, name: str) -> bool:
        step = self._definition.by_name.get(name)
        return (
            (step is not None and self._stands(step))
            or self._progress.reason is not None
            or (self._progress.status not in _RUNNING)
            or (step is None and not self._definition.in_block and self._definition.started)
        )

    def _stands(self, step: Step[Any]) -> bool:
        """The step succeeded (or was skipped) and nothing will undo it."""
        if step._progress.outcome not in _STANDS:
            return False
        return self._progress.reason is None or step._after_pivot or step is self._definition.pivot
