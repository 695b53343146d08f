"""Operator actions on a saga that waits for a human, from Python (and the CLI).

Each is a Workflow Update (see ``temporal_saga._desk``): validated by the saga
before anything is written to its history, recorded there once accepted, and answered
with one line of text.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from .._errors import ActionRejected
from .._protocol import (
    SAGA_GIVE_UP_UPDATE,
    SAGA_RESOLVE_UPDATE,
    SAGA_RETRY_UPDATE,
    GiveUp,
    ResolveStep,
    RetryStep,
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
    by: str | None = None,
    saga: str | None = None,
) -> str:
    """Mark a step that needs a human as finished by hand.

    The trace then shows ``✔️ NAME (resolved by hand: NOTE)``. Arguments as for
    :func:`retry_step`; ``note`` says what was done (public text: no personal data).

    Raises:
        ActionRejected: The saga refused it (nothing was recorded).
    """
    request = ResolveStep(step=step, note=note, by=by or operator_name(), saga=saga)
    return await _act(handle, SAGA_RESOLVE_UPDATE, request)


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
