"""Reading a saga from outside: its state from the query, or else from history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from .._protocol import SAGA_STATE_QUERY
from .._sdk import data_converter_of
from .._state import SagaState
from .._trace import render_trace
from ._history import state_from_history

# A query waits for a worker to answer; past this, the history is read instead.
QUERY_TIMEOUT = timedelta(seconds=2)


async def load_state(handle: WorkflowHandle[Any, Any]) -> tuple[SagaState, str]:
    """The saga's state, and where it came from (``"query"`` or ``"history"``).

    Asks the ``saga_state`` query, which needs a worker; when none answers (or the
    workflow has not run its first task yet, or the answer is encrypted with a key
    this client lacks), rebuilds the state from the history.

    Raises:
        temporal_saga._history.NotASaga: The workflow is not a saga.
        temporalio.service.RPCError: The workflow does not exist, or the server is
            unreachable.
    """
    try:
        state = await handle.query(
            SAGA_STATE_QUERY, result_type=SagaState, rpc_timeout=QUERY_TIMEOUT
        )
        return state, "query"
    # KeyError, ValueError: an encrypted answer and no key for it (see _codec).
    except (WorkflowQueryFailedError, RPCError, KeyError, ValueError):
        history = await handle.fetch_history()
        converter = data_converter_of(handle)
        state = await state_from_history(history.events, converter, workflow_id=handle.id)
        return state, "history"


async def watch(
    handle: WorkflowHandle[Any, Any], *, interval: float = 0.25
) -> AsyncIterator[SagaState]:
    """Yield the saga's state each time it changes, until the workflow closes.

    Args:
        handle: The saga workflow's handle.
        interval: Seconds between polls.
    """
    last: SagaState | None = None
    while True:
        closed = (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
        try:
            state, _ = await load_state(handle)
        except ValueError:
            if closed:
                raise
            state = None  # nothing scheduled yet
        if state is not None and state != last:
            last = state
            yield state
        if closed:
            return
        await asyncio.sleep(interval)


async def follow_trace(
    handle: WorkflowHandle[Any, Any], *, interval: float = 0.25
) -> AsyncIterator[str]:
    """Yield each new line of the saga's trace as it appears, until the workflow closes.

    A running step's line appears (⏳), then its outcome's (✔️ or ❌), and so on:
    the trace unfolding, one line at a time.
    """
    seen: set[str] = set()
    async for state in watch(handle, interval=interval):
        for line in render_trace(state).splitlines():
            if line and line not in seen and not line.startswith("⬜"):
                seen.add(line)
                yield line
