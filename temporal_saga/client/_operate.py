"""Acting on a saga from outside, from Python (and the CLI): operators' actions on a
saga that waits for a human, and events for its event steps.

Each is a Workflow Update (see ``temporal_saga._desk`` and ``temporal_saga._events``):
validated by the saga before anything is written to its history, recorded there once
accepted, and answered with one line of text. An event can also go as a Signal (no
answer).
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from .._errors import ActionRejected
from .._protocol import (
    SAGA_EVENT,
    SAGA_GIVE_UP_UPDATE,
    SAGA_RESOLVE_UPDATE,
    SAGA_RETRY_UPDATE,
    GiveUp,
    ResolveStep,
    RetryStep,
    SendEvent,
)


def operator_name() -> str:
    """Who this process acts as: ``user@host`` (what the CLI sends as ``by``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


_UNSET: Any = object()


async def _act(handle: WorkflowHandle[Any, Any], update: str, request: Any) -> str:
    try:
        answer: str = await handle.execute_update(update, request, result_type=str)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise ActionRejected(getattr(cause, "message", None) or str(cause)) from err
    return answer


async def send_event(
    handle: WorkflowHandle[Any, Any],
    event: str,
    data: Any = None,
    *,
    id: str | None = None,
    saga: str | None = None,
    by: str | None = None,
    answer: bool = True,
) -> str | None:
    """Bring the event ``event`` to the saga's event step that waits for it.

    Args:
        handle: The saga's workflow.
        event: The event's name (``Saga.event``'s ``event``).
        data: Its payload (JSON-serialisable; the step validates it as its
            ``result_type``).
        id: This occurrence's id, e.g. the webhook's delivery id: the same id sent
            twice counts once, so a sender can retry safely.
        saga: The saga's name, if several in the workflow wait for the event.
        by: Who sends it, for the history (default: ``user@host``).
        answer: True (default): a Workflow Update, answered once the saga took or
            kept the event, or refused it; a worker must run the saga to answer, so
            bound the wait with ``asyncio.timeout(...)``. False: a Signal, fire and
            forget (the saga logs a refusal and records it in its state).

    Returns:
        The saga's answer (``taken by step 'NAME': 'EVENT'``, ``kept for step ...``,
        ``already received: ...``), or None for a Signal.

    Raises:
        ActionRejected: The saga refused the event (the reason says why: unknown
            event, already received, its step ended, the saga failed or closed, an
            invalid payload); nothing was recorded.
    """
    request = SendEvent(event=event, id=id, data=data, saga=saga, by=by or operator_name())
    try:
        if answer:
            return await _act(handle, SAGA_EVENT, request)
        await handle.signal(SAGA_EVENT, request)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:  # closed, or no such workflow
            raise ActionRejected(f"workflow {handle.id!r} is not running: {err.message}") from err
        raise
    return None


async def retry_step(
    handle: WorkflowHandle[Any, Any],
    step: str,
    *,
    arg: Any = _UNSET,
    by: str | None = None,
    saga: str | None = None,
) -> str:
    """Run a failed compensation (or a step after the pivot) of a waiting saga again.

    Args:
        handle: The saga's workflow.
        step: The step's name (as in the trace; ``needs_human`` lists them).
        arg: A new argument for the compensation (or step) instead of the one it ran
            with (JSON-serialisable, as the activity expects it).
        by: Who acts, for the history and the trace (default: ``user@host``).
        saga: The saga's name, if several in the workflow wait for a human.

    A worker must run the saga's workflow to answer, so this waits for one; bound the
    wait with ``asyncio.timeout(...)``: the action is not withdrawn, and the server
    delivers it once a worker runs the saga again.

    Returns:
        The saga's one-line answer: ``NAME: compensated``, ``NAME: failed again: ...``.

    Raises:
        ActionRejected: The saga refused the retry (nothing was recorded).
    """
    fields: dict[str, Any] = {"step": step, "by": by or operator_name(), "saga": saga}
    if arg is not _UNSET:
        fields["arg"] = arg
    return await _act(handle, SAGA_RETRY_UPDATE, RetryStep(**fields))


async def resolve_step(
    handle: WorkflowHandle[Any, Any],
    step: str,
    *,
    note: str,
    result: Any = _UNSET,
    by: str | None = None,
    saga: str | None = None,
) -> str:
    """Mark a step that needs a human as finished by hand.

    The trace then shows ``✔️ NAME (resolved by hand: NOTE)``. Arguments as for
    :func:`retry_step`; ``note`` says what was done (public text: no personal data);
    ``result``, if given, becomes the step's result, which the steps after it read (for
    an event step that did not get its event: the payload, validated as the event's).

    Raises:
        ActionRejected: The saga refused it (nothing was recorded).
    """
    fields: dict[str, Any] = {"step": step, "note": note, "by": by or operator_name()}
    if result is not _UNSET:
        fields["result"] = result
    return await _act(handle, SAGA_RESOLVE_UPDATE, ResolveStep(saga=saga, **fields))


async def give_up(
    handle: WorkflowHandle[Any, Any],
    *,
    note: str,
    by: str | None = None,
    saga: str | None = None,
) -> str:
    """Stop a saga's wait for a human: it ends ``COMPENSATION_FAILED`` at once.

    Raises:
        ActionRejected: The saga refused it (not waiting, or a retry still runs).
    """
    request = GiveUp(note=note, by=by or operator_name(), saga=saga)
    return await _act(handle, SAGA_GIVE_UP_UPDATE, request)
