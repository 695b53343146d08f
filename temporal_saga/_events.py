"""Event steps: steps that succeed when an outside event reaches their saga.

An event step (:meth:`Saga.event`) waits, with a deadline, for a named event: a
payment confirmed by a webhook, a parcel shipped, a manager's approval. Senders bring
it as the ``saga_event`` Workflow Update (answered: taken, kept, or refused with the
reason) or the ``saga_event`` Signal (fire and forget: a refusal is logged and
recorded in the saga's state). The rules (docs/semantics.md, "Steps that wait for
the world"):

* an event whose step is not due yet is kept, and taken when the step starts; the
  same ``id`` delivered twice counts once;
* no event by the deadline: the step fails, ``no 'payment' event within 1 hour``,
  and the saga undoes what took effect (past the pivot: it waits for a human, where
  ``retry`` waits again);
* the saga fails, or is cancelled, while the step waits: the wait stops, the step is
  uncertain (the world may be completing it) and its compensation runs;
* an event no step of the saga will take (unknown, already received, its step
  ended, the saga failed or closed), or whose payload is invalid, is refused.

Each saga has an :class:`Inbox`; the workflow run's Update and Signal handlers,
registered once, find the inbox an event is for. Only the scheduler waits on it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._errors import SagaTypeError
from ._protocol import (
    EVENT_DUPLICATE,
    EVENT_KEPT,
    EVENT_TAKEN,
    SAGA_EVENT,
    PublicText,
    SendEvent,
    event_timer_summary,
)
from ._sdk import RunState, run_state, set_update_handlers, update_definition
from ._state import SagaStatus, StepStatus
from ._trace import duration

if TYPE_CHECKING:
    from ._definition import SagaDefinition
    from ._progress import SagaProgress
    from ._publisher import Publisher
    from ._step import Step

# Each result type's validator, made once (weak keys: a sandbox re-imports the
# workflow's module, and its types, for each run).
_ADAPTERS: weakref.WeakKeyDictionary[type, TypeAdapter[Any]] = weakref.WeakKeyDictionary()


def _adapter(result_type: type) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(result_type)
    if adapter is None:
        adapter = _ADAPTERS[result_type] = TypeAdapter(result_type)
    return adapter


@dataclass(frozen=True, slots=True)
class EventWait:
    """What an event step waits for: the event's name, for how long, and the type its
    payload is validated against (None: taken as sent)."""

    event: str
    timeout: timedelta
    result_type: type | None

    @classmethod
    def checked(cls, event: object, timeout: object, result_type: object, where: str) -> EventWait:
        """The wait of ``Saga.event``'s arguments, or a ``SagaTypeError`` naming the bad one."""
        if not isinstance(event, str) or not event or len(event) > 200:
            raise SagaTypeError(f"{where}: the event's name must be text of 1 to 200 characters")
        if not isinstance(timeout, timedelta) or timeout <= timedelta():
            raise SagaTypeError(f"{where}: timeout= must be a positive timedelta, not {timeout!r}")
        if result_type is not None:
            if not isinstance(result_type, type):
                raise SagaTypeError(f"{where}: result_type= takes a type, not {result_type!r}")
            try:
                _adapter(result_type)
            except Exception as err:  # pydantic cannot validate it
                raise SagaTypeError(
                    f"{where}: result_type={result_type.__name__} cannot be validated by "
                    f"pydantic ({type(err).__name__})"
                ) from None
        return cls(event, timeout, result_type)

    def validate(self, data: Any) -> Any:
        """The payload as the step's result (``ValueError`` saying what is wrong, without
        quoting the data: the reason may reach the trace, which is public)."""
        if self.result_type is None:
            return data
        try:
            return _adapter(self.result_type).validate_python(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(
                f"invalid {self.event!r} event for {self.result_type.__name__}: {problems}"
            ) from None


@dataclass(slots=True)
class _Mail:
    """An event received for a step: its sender's id, its payload (validated, unless
    it came before its step was added), and whether the step took it."""

    id: str | None
    value: Any
    validated: bool
    taken: bool = False


def _inboxes() -> list[Inbox]:
    inboxes: list[Inbox] = run_state().inboxes
    return inboxes


def _route(request: SendEvent) -> Inbox:
    """The inbox an event is for (``ValueError``: no saga here will take it)."""
    inboxes = [i for i in _inboxes() if request.saga in (None, i.name)]
    if not inboxes:
        raise ValueError(f"no saga {request.saga!r} here" if request.saga else "no saga here")
    takers = [i for i in inboxes if i.may_take(request.event)]
    if len(takers) > 1:
        names = ", ".join(repr(i.name) for i in takers)
        raise ValueError(
            f"several sagas wait for {request.event!r} ({names}): say which with saga="
        )
    return takers[0] if takers else inboxes[-1]  # the last saga explains its refusal


def _validate(request: SendEvent) -> None:
    _route(request).judge(request)


def _receive(request: SendEvent) -> str:
    return _route(request).receive(request)


def _signalled(request: SendEvent) -> None:
    """The Signal: no answer to give, so a refusal is logged and recorded."""
    try:
        inbox = _route(request)
    except ValueError as err:
        workflow.logger.warning("event %r refused: %s", request.event, err)
        return
    try:
        inbox.receive(request)
    except ValueError as err:
        inbox.refused(request, str(err))


# A saga in these statuses records refused events in its state (a closed one only logs).
_OPEN = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.NEEDS_HUMAN)

_UPDATE = update_definition(SAGA_EVENT, _receive, _validate, SendEvent, str)


class Inbox:
    """Where a saga's events arrive and its event steps wait for them."""

    def __init__(
        self, definition: SagaDefinition, progress: SagaProgress, publisher: Publisher
    ) -> None:
        self._definition = definition
        self._progress = progress
        self._publisher = publisher
        self._steps = definition.event_steps  # each event's step
        self._mail: dict[str, _Mail] = {}  # each event received, taken or kept

    @property
    def name(self) -> str:
        return self._definition.name

    def open(self, run: RunState) -> None:
        """Take this workflow run's events (the handlers are registered with the first
        saga that may wait for one: one with event steps, or the imperative form's,
        whose steps come as its code adds them, so an event for a step not added yet
        is kept)."""
        if not self._definition.in_block and not self._steps:
            return  # waits for nothing: an event finds no saga, and is refused
        if not run.inboxes:
            set_update_handlers((_UPDATE,))
            workflow.set_signal_handler(SAGA_EVENT, _signalled)
        run.inboxes.append(self)

    def may_take(self, event: str) -> bool:
        """Whether this saga has (or, its block running, may still add) a step for ``event``."""
        in_block = self._definition.in_block
        return event in self._steps or (in_block and self._progress.reason is None)

    def judge(self, request: SendEvent) -> tuple[Step[Any] | None, Any]:
        """The event's step (None: not added yet) and its payload, validated; a
        ``ValueError`` with the reason if the saga refuses the event."""
        event, mail = request.event, self._mail.get(request.event)
        if mail is not None and request.id is not None and mail.id == request.id:
            return None, None  # the same event again: nothing more to do
        step = self._steps.get(event)
        where = f"saga {self.name!r}"
        if step is None and not self.may_take(event):
            known = ", ".join(repr(e) for e in self._steps) or "none"
            raise ValueError(f"{where} waits for no {event!r} event (its events: {known})")
        if mail is not None:
            holds = "received" if mail.taken else "holds"
            raise ValueError(f"{where} {holds} a {event!r} event already (id {mail.id!r})")
        failing = self._progress.reason is not None
        if step is not None and step._progress.outcome is StepStatus.RUNNING:
            if failing and not step._after_pivot:
                raise ValueError(
                    f"{where} is failing ({self._progress.reason}): step {step.name!r} "
                    "waits no more"
                )
        elif step is not None:
            if step._progress.outcome is not StepStatus.PENDING:
                status = step._progress.outcome.value
                raise ValueError(f"{where}, step {step.name!r} is {status}: it waits for no event")
            if failing or self._progress.status is not SagaStatus.RUNNING:
                raise ValueError(
                    f"{where} is {self._progress.status.value} ({self._progress.reason}): step "
                    f"{step.name!r} will not run"
                )
        wait = step._definition.event if step is not None else None
        return step, (request.data if wait is None else wait.validate(request.data))

    def receive(self, request: SendEvent) -> str:
        """Take the event (``ValueError``: refused, see :meth:`judge`); the answer."""
        step, value = self.judge(request)
        mail = self._mail.get(request.event)
        if mail is not None:
            return f"{EVENT_DUPLICATE}: {request.event!r} (id {request.id!r})"
        self._mail[request.event] = _Mail(request.id, value, validated=step is not None)
        if step is None or step._progress.outcome is StepStatus.PENDING:
            shown = repr(step.name) if step is not None else "to come"
            return f"{EVENT_KEPT} {shown}: {request.event!r}"
        return f"{EVENT_TAKEN} {step.name!r}: {request.event!r}"

    def refused(self, request: SendEvent, reason: str) -> None:
        """A signalled event the saga refused: logged, and recorded in its state."""
        workflow.logger.warning("saga %r: event %r refused: %s", self.name, request.event, reason)
        if self._progress.status in _OPEN:
            self._publisher.record("event refused", request, note=f"{request.event}: {reason}")

    async def wait(self, step: Step[Any], saga_run: str) -> Any:
        """Wait for the event of ``step`` (an event step) and take it: its payload."""
        wait = step._definition.event
        assert wait is not None
        event = wait.event
        if self._mail.get(event) is None:  # not kept: wait for it, with the deadline
            try:
                await workflow.wait_condition(
                    lambda: event in self._mail,
                    timeout=wait.timeout,
                    timeout_summary=PublicText(event_timer_summary(saga_run, step.name, event)),
                )
            except TimeoutError:
                raise ApplicationError(
                    f"no {event!r} event within {duration(wait.timeout)}",
                    type="EventTimedOut",
                    non_retryable=True,
                ) from None
        mail = self._mail[event]
        mail.taken = True
        if not mail.validated:  # kept before its step was added: validated now
            try:
                mail.value, mail.validated = wait.validate(mail.value), True
            except ValueError as err:
                raise ApplicationError(str(err), type="InvalidEvent", non_retryable=True) from None
        return mail.value

    def forget_failed(self, step: Step[Any]) -> None:
        """An event step is retried (past the pivot): it waits for a new event."""
        wait = step._definition.event
        if wait is not None:
            mail = self._mail.get(wait.event)
            if mail is not None and not mail.taken:
                return  # kept, not yet taken: the retry takes it
            self._mail.pop(wait.event, None)
