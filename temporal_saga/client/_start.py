"""The early answer, from the caller's side: start a saga and return as soon as a
named step (typically the pivot) has succeeded, while the rest runs durably."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from .._errors import ActionRejected, SagaFailed
from .._protocol import SAGA_ANSWER_UPDATE, AnswerWhen


async def start_until_step(
    client: Client,
    workflow: Any,
    arg: Any,
    *,
    step: str,
    id: str,
    task_queue: str,
    saga: str | None = None,
    result_type: type | None = None,
    **start_options: Any,
) -> Any:
    """Start a saga's workflow and return once its step ``step`` has succeeded.

    One round trip (Update-with-Start): the server starts the workflow and delivers
    the ``saga_answer`` Workflow Update with it; the saga answers as soon as ``step``
    succeeded, with its result, or as soon as it failed before that step could
    count. The saga goes on durably after the answer: follow it with
    ``client.get_workflow_handle(id)``. The saga must begin (``run()`` or ``async
    with``) before its workflow first waits on anything, so that the Update finds it.

    Args:
        client: The client (made with ``connect`` or ``SagaPlugin``).
        workflow: The workflow's run method (``Order.run``) or its type name.
        arg: The workflow's argument.
        step: The step to answer at: its name.
        id: The workflow id; a workflow with this id already running is an error.
        task_queue: The workers' task queue.
        saga: The saga's name, if the workflow runs several.
        result_type: The type to read the step's result as (default: as decoded).
        **start_options: More options of the workflow's start
            (``WithStartWorkflowOperation``: ``execution_timeout``, ``memo``...).

    Returns:
        The step's result.

    Raises:
        SagaFailed: The saga failed before the step succeeded (or after, where the
            step is undone): its reason, and its state at that moment (the undo may
            still run).
        ActionRejected: The saga has no such step.
    """
    start = WithStartWorkflowOperation(
        workflow,
        arg,
        id=id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        **start_options,
    )
    try:
        return await client.execute_update_with_start_workflow(
            SAGA_ANSWER_UPDATE,
            AnswerWhen(step=step, saga=saga),
            start_workflow_operation=start,
            result_type=result_type,
        )
    except WorkflowUpdateFailedError as err:
        failed = SagaFailed.from_error(err)
        if failed is not None:
            raise failed from None
        cause = err.cause
        raise ActionRejected(getattr(cause, "message", None) or str(cause)) from err
