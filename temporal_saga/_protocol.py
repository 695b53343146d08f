"""The wire contract: every name and format that a saga shares with the world.

What a worker, a client, the CLI, the testing kit, the codec or another SDK must agree
on lives here and nowhere else:

* the ``saga_state`` query, the ``SagaStatus`` search attribute, the operators'
  Workflow Updates and their request models, the ``saga_event`` Update and Signal
  that bring an event to an event step;
* the patch ids the engine's own changes are recorded under (renaming one breaks
  every saga in flight that recorded it);
* a step's activity id, built and parsed, and the idempotency key made of it:
  ``<saga run>/<step>``, its compensation's the same plus ``/compensate``.
  ``<saga run>`` is the saga's name for the first run of that name in a workflow
  run, ``<name>#2``, ``<name>#3``… for the next ones (a workflow that retries a saga
  in a loop), so every run gets its own ids and idempotency keys. Names are escaped
  (``%`` ``/`` ``#`` as ``%25`` ``%2F`` ``%23``), so no step name can make two ids
  collide, and names without those characters keep readable ids;
* public text: the payload metadata tag that lets step names and the trace through
  the payload codec in clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.common import SearchAttributeKey

# --- Queries, search attributes, patches ------------------------------------------------

#: Name of the query that returns a running (or closed) saga's :class:`SagaState`.
SAGA_STATE_QUERY = "saga_state"

#: The Keyword search attribute a saga keeps its status in, with ``search_attributes=True``.
#: Register it first: ``temporal operator search-attribute create --name SagaStatus
#: --type Keyword`` (or ``temporal server start-dev --search-attribute SagaStatus=Keyword``).
SAGA_STATUS_ATTRIBUTE = SearchAttributeKey.for_keyword("SagaStatus")

#: The local activity that checks the attribute exists (registered by ``SagaPlugin``).
CHECK_ATTRIBUTE_ACTIVITY = "temporal_saga.check_search_attribute"
CHECK_ATTRIBUTE_PATCH = "temporal-saga/check-search-attribute"
#: Sagas that ended before the NEEDS_HUMAN wait existed replay without it.
NEEDS_HUMAN_PATCH = "temporal-saga/needs-human"

# --- The operators' Workflow Updates ------------------------------------------------------

#: The Workflow Updates an operator sends to a saga that needs a human.
SAGA_RETRY_UPDATE = "saga_retry"
SAGA_RESOLVE_UPDATE = "saga_resolve"
SAGA_GIVE_UP_UPDATE = "saga_give_up"

# An action's ``by`` and note are public text (the trace shows them): keep them short.
_TEXT = Field(min_length=1, max_length=500)


class Request(BaseModel):
    """What every operator Update carries: who, and which saga."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str | None = Field(default=None, max_length=200)
    saga: str | None = None  # which saga, when several in one workflow need a human


class _Unset(Request):
    """A request whose optional ``_OMITTED`` fields leave the wire when not given: no
    field and a null one mean different things."""

    _OMITTED: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name in self._OMITTED:
            if name not in self.model_fields_set:
                data.pop(name, None)
        return data


class RetryStep(_Unset):
    """Input of ``saga_retry``: run a failed compensation (or a step after the pivot)
    again. ``arg``, when given (even as null), replaces the argument it ran with.

    From the ``temporal`` CLI: ``--input '{"step": "book hotel room", "by": "alice"}'``.
    """

    _OMITTED: ClassVar[tuple[str, ...]] = ("arg",)

    step: str
    arg: Any = None


class ResolveStep(_Unset):
    """Input of ``saga_resolve``: the operator finished ``step`` by hand; ``note`` says
    how. ``result``, when given (even as null), becomes the step's result, for the steps
    after it to read (an event step's payload: validated as the event's would be)."""

    _OMITTED: ClassVar[tuple[str, ...]] = ("result",)

    step: str
    note: str = _TEXT
    result: Any = None


class GiveUp(Request):
    """Input of ``saga_give_up``: stop waiting; the saga ends ``COMPENSATION_FAILED``."""

    note: str = _TEXT


#: How ``saga_retry`` answers when the step (or its compensation) failed again:
#: ``"<what>: failed again: <error>"``.
FAILED_AGAIN = "failed again"

#: Each operator update: the action it records (``OperatorAction.action``), its input.
ACTIONS: dict[str, tuple[str, type[RetryStep | ResolveStep | GiveUp]]] = {
    SAGA_RETRY_UPDATE: ("retry", RetryStep),
    SAGA_RESOLVE_UPDATE: ("resolve", ResolveStep),
    SAGA_GIVE_UP_UPDATE: ("give up", GiveUp),
}

# --- Events: the ``saga_event`` Update (answered) and Signal (fire and forget) --------

#: The name of both the Workflow Update and the Signal that bring an event to a saga.
SAGA_EVENT = "saga_event"


class SendEvent(Request):
    """Input of ``saga_event``: the event ``event`` happened, with ``data``.

    ``id`` is the sender's own id for this occurrence: the same id delivered twice
    counts once (a sender that retries gets the first answer again). From the
    ``temporal`` CLI: ``--input '{"event": "payment", "id": "pay-7", "data": {...}}'``.
    """

    event: str = Field(min_length=1, max_length=200)
    id: str | None = Field(default=None, max_length=200)
    data: Any = None


#: The Workflow Update that answers once a named step succeeded (its result), or
#: fails with ``SagaFailed`` once the saga failed before it: the early answer that a
#: caller sends with the saga's start (Update-with-Start).
SAGA_ANSWER_UPDATE = "saga_answer"


class AnswerWhen(Request):
    """Input of ``saga_answer``: answer once ``step`` has succeeded."""

    step: str = Field(min_length=1)


#: How ``saga_event`` answers an event its step took, and one it keeps for its step
#: until that step is due, and one it had received already (the same ``id``).
EVENT_TAKEN = "taken by step"
EVENT_KEPT = "kept for step"
EVENT_DUPLICATE = "already received"


def event_timer_summary(saga_run: str, step: str, event: str) -> str:
    """What the Web UI shows for an event step's wait (its timer's summary); the
    history rebuild reads the step back from it (:func:`parse_event_timer_summary`)."""
    return f"{step_activity_id(saga_run, step)}{_WAITS_FOR}{event}"


_WAITS_FOR = " waits for event: "


def parse_event_timer_summary(summary: str) -> tuple[StepId, str] | None:
    """The step and the event of an event step's timer summary; None if it is not one."""
    ident, found, event = summary.rpartition(_WAITS_FOR)
    step = parse_step_id(ident) if found else None
    if step is None or step.compensation or not event:
        return None
    return step, event


# --- Activity ids -------------------------------------------------------------------------

COMPENSATION_SUFFIX = "/compensate"

_ESCAPES = (("%", "%25"), ("/", "%2F"), ("#", "%23"))


def escape(name: str) -> str:
    """A name as it appears inside an id: without ``/`` or ``#`` of its own."""
    for raw, escaped in _ESCAPES:
        name = name.replace(raw, escaped)
    return name


def unescape(text: str) -> str:
    """The name that :func:`escape` turned into ``text``."""
    for raw, escaped in reversed(_ESCAPES):
        text = text.replace(escaped, raw)
    return text


def saga_run_id(saga: str, run: int) -> str:
    """The id of the ``run``-th run (from 1) of the saga called ``saga`` in a workflow."""
    return escape(saga) if run == 1 else f"{escape(saga)}#{run}"


def step_activity_id(saga_run: str, step: str) -> str:
    """The activity id of a step (its compensation's adds :data:`COMPENSATION_SUFFIX`)."""
    return f"{saga_run}/{escape(step)}"


@dataclass(frozen=True, slots=True)
class StepId:
    """A step's (or compensation's) activity id, read back."""

    saga: str  # the saga's name
    run: int  # which run of that saga in its workflow run, from 1
    step: str  # the step's name
    compensation: bool  # the id is the step's compensation's
    saga_run: str  # the id's first part, as written (:func:`saga_run_id`)

    @property
    def step_id(self) -> str:
        """The step's own activity id (a compensation's without its suffix)."""
        return step_activity_id(self.saga_run, self.step)


def parse_step_id(activity_id: str) -> StepId | None:
    """Read a step's or compensation's activity id; None if it is neither."""
    saga_run, slash, rest = activity_id.partition("/")
    step, suffix_slash, suffix = rest.partition("/")
    if not saga_run or not slash or not step or (suffix_slash and suffix != "compensate"):
        return None
    name, _, run = saga_run.partition("#")
    number = int(run) if run.isdigit() else 1
    return StepId(unescape(name), number, unescape(step), bool(suffix_slash), saga_run)


#: The Nexus header that carries a saga step's idempotency key (``NexusOperation``).
NEXUS_KEY_HEADER = "temporal-saga-key"
#: The Nexus header that carries a step's (or compensation's) id, as its activity id.
NEXUS_STEP_HEADER = "temporal-saga-step"


@dataclass(frozen=True, slots=True)
class RunningStep:
    """A saga step (or compensation) as the code that does its work sees it: an
    activity, or the handler of a Nexus operation (which gets it in two headers)."""

    workflow_id: str
    run_id: str
    activity_id: str  # the step's id (a compensation's ends with /compensate)

    @property
    def key(self) -> str:
        """The step's idempotency key (see :func:`idempotency_key`)."""
        step = self.activity_id.removesuffix(COMPENSATION_SUFFIX)
        return f"{self.workflow_id}/{self.run_id}/{step}"

    def nexus_headers(self) -> dict[str, str]:
        """The Nexus headers that carry it to an operation's handler."""
        return {NEXUS_KEY_HEADER: self.key, NEXUS_STEP_HEADER: self.activity_id}

    @classmethod
    def from_nexus_headers(cls, headers: Mapping[str, str]) -> RunningStep | None:
        """Read :meth:`nexus_headers` back; None if they are not a saga step's."""
        key, ident = headers.get(NEXUS_KEY_HEADER), headers.get(NEXUS_STEP_HEADER)
        parsed = parse_step_id(ident) if ident else None
        if not key or not ident or parsed is None or not key.endswith(f"/{parsed.step_id}"):
            return None
        # The key is <workflow id>/<run id>/<step>; a run id has no slash.
        workflow_id, _, run_id = key.removesuffix(f"/{parsed.step_id}").rpartition("/")
        return cls(workflow_id, run_id, ident)


def running_step() -> RunningStep:
    """The step whose work runs here: the activity's, or the Nexus operation's that
    this handler is starting.

    Raises:
        RuntimeError: Neither in an activity, nor in a Nexus handler starting a saga
            step's operation.
    """
    if activity.in_activity():
        info = activity.info()
        return RunningStep(info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
    from ._sdk import nexus_start_headers  # the client side's: only outside workflows

    headers = nexus_start_headers()
    step = RunningStep.from_nexus_headers(headers) if headers is not None else None
    if step is None:
        raise RuntimeError(
            "not in a saga step's activity, nor in a Nexus handler starting a saga "
            "step's operation (no temporal-saga-key and temporal-saga-step headers)"
        )
    return step


def idempotency_key() -> str:
    """A key for the current saga step, for the service to deduplicate on.

    Inside a step's activity it is the same on every retry of that step, and inside
    the step's compensation it is the same as the step's, so a compensation can find
    what an uncertain step (one that timed out) did, and a service can refuse a
    booking that arrives after its cancellation. It is unique per workflow run, saga
    run and step: a saga that runs again in the same workflow (a retry loop) gets
    new keys.

    The key is ``<workflow id>/<run id>/<activity id>`` (a compensation's activity id
    without its ``/compensate`` suffix), so an activity written with another
    Temporal SDK can compute the same key from its activity info. In the handler of a
    Nexus operation that is a saga's step or compensation (``NexusOperation``), it is
    the operation's ``temporal-saga-key`` header: the same key.

    Raises:
        RuntimeError: Not called from inside an activity, nor from a Nexus handler
            starting a saga's operation.
    """
    return running_step().key


# --- Public text ------------------------------------------------------------------------

#: Metadata key of a payload that holds public text.
PUBLIC = "temporal-saga-public"


class PublicText(str):
    """Text a saga publishes in clear even when payloads are encrypted: step and
    compensation names (the activities' summaries) and the live trace.

    The saga data converter tags such payloads with :data:`PUBLIC` metadata, and
    tagged payloads bypass the payload codec, whichever it is.
    """

    # Checked by attribute, not isinstance: the workflow sandbox re-imports this
    # module, so the engine's PublicText is not the converter's class.
    __temporal_saga_public__ = True


def is_public_value(value: object) -> bool:
    """Whether ``value`` is public text (see :class:`PublicText`)."""
    return getattr(type(value), "__temporal_saga_public__", False) is True


def is_public(payload: Payload) -> bool:
    """Whether a payload is tagged as public text."""
    return payload.metadata.get(PUBLIC) == b"1"
