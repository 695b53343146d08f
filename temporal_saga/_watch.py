"""Reading a saga from outside: follow its state through the ``saga_state`` query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from ._saga import SAGA_STATE_QUERY
from ._state import SagaState


async def watch(
    handle: WorkflowHandle[Any, Any], *, interval: float = 0.25
) -> AsyncIterator[SagaState]:
    """Yield the saga's state each time it changes, until the workflow closes.

    Needs a worker polling the workflow's task queue (queries run on workers).

    Args:
        handle: The saga workflow's handle.
        interval: Seconds between polls.
    """
    last: SagaState | None = None
    while True:
        closed = (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
        try:
            state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
        except (WorkflowQueryFailedError, RPCError):
            # The first workflow task has not run yet: no handler is registered.
            if closed:
                raise
        else:
            if state != last:
                last = state
                yield state
        if closed:
            return
        await asyncio.sleep(interval)
