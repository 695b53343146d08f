"""Nexus operations as steps and compensations: another team's service, reached
through a Nexus endpoint instead of a task queue of one's own namespace.

A step's (or compensation's) callee may be a :class:`NexusOperation` instead of an
activity. The saga starts it with ``workflow.create_nexus_client`` and awaits its
result; it fails, times out or is cancelled as an activity does, and is read the same
way (``_calls.describe``). Two Nexus headers carry the step's identity, which the
history keeps (the scheduled event's ``nexus_header``) and the handler reads:

* ``temporal-saga-key``: the step's idempotency key (``idempotency_key()`` returns it
  in the handler), the same for the step and its compensation;
* ``temporal-saga-step``: the step's id, as an activity step's activity id (its
  compensation's ends with ``/compensate``), which the history rebuild and the
  barrier read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import TimeoutError, TimeoutType

from ._errors import SagaTypeError
from ._protocol import PublicText, RunningStep


@dataclass(frozen=True, slots=True)
class NexusOperation:
    """A Nexus operation, as a saga step's callee or its compensation.

    Pass it where an activity goes: ``saga.step("buy insurance",
    NexusOperation("insurer", InsuranceService, InsuranceService.buy), request,
    compensate=NexusOperation("insurer", InsuranceService, "cancel"))``. The other
    team's handler reads the step's idempotency key with
    :func:`temporal_saga.idempotency_key` (or the ``temporal-saga-key`` header), the
    same for the step and its compensation, so it can deduplicate; a synchronous
    handler can use ``temporal_saga.barrier`` as an activity does.

    A step's activity options (``start_to_close_timeout``, ``retry_policy``...) do not
    apply: Nexus retries a failed start by itself (a retryable handler error) until
    the operation ends. An operation that fails is a step that failed (not
    compensated); one that times out, or that runs when the saga fails (with
    ``cancel_in_flight``) or is cancelled, may have taken effect: the saga cancels it
    through Nexus (waiting as ``cancellation_type`` says), then compensates it. The
    timeout is the saga's own timer (Nexus, timing an operation out, would not cancel
    it: a workflow behind it would run on); an operation that completes while being
    cancelled (a synchronous one cannot be stopped) counts with its result.

    Args:
        endpoint: The Nexus endpoint's name (``temporal operator nexus endpoint
            create``).
        service: The service: a ``@nexusrpc.service`` class, or its name.
        operation: The operation: the service class's attribute
            (``InsuranceService.buy``), or its name.
        schedule_to_close_timeout: How long the operation may take in all, retries
            included (default: the server's limit).
        cancellation_type: What a cancel waits for (default: the operation's
            cancellation to complete, so its compensation runs after it).
        output_type: The result's type, when ``service`` is a name (with a service
            class, the operation's own).
    """

    endpoint: str
    service: type[Any] | str
    operation: Any
    _: KW_ONLY
    schedule_to_close_timeout: timedelta | None = None
    cancellation_type: workflow.NexusOperationCancellationType = (
        workflow.NexusOperationCancellationType.WAIT_COMPLETED
    )
    output_type: type[Any] | None = None

    def __post_init__(self) -> None:
        where = f"NexusOperation({self.endpoint!r}, ...)"
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise SagaTypeError(f"{where}: the endpoint is a non-empty name")
        if isinstance(self.service, str):
            if not self.service:
                raise SagaTypeError(f"{where}: the service's name cannot be empty")
        elif not isinstance(self.service, type):
            raise SagaTypeError(
                f"{where}: the service is a @nexusrpc.service class or its name, "
                f"not {self.service!r}"
            )
        if isinstance(self.operation, str):
            if not self.operation:
                raise SagaTypeError(f"{where}: the operation's name cannot be empty")
        elif isinstance(self.service, str):
            raise SagaTypeError(f"{where}: with a service's name, name the operation too")
        elif not callable(self.operation) and not hasattr(self.operation, "name"):
            raise SagaTypeError(
                f"{where}: the operation is the service's attribute or its name, "
                f"not {self.operation!r}"
            )
        timeout = self.schedule_to_close_timeout
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
            raise SagaTypeError(
                f"{where}: schedule_to_close_timeout takes a positive timedelta, not {timeout!r}"
            )
        if not isinstance(self.cancellation_type, workflow.NexusOperationCancellationType):
            raise SagaTypeError(
                f"{where}: cancellation_type takes a workflow.NexusOperationCancellationType"
            )

    @property
    def shown(self) -> str:
        """``endpoint/service.operation``, as the picture and the errors name it."""
        service = self.service if isinstance(self.service, str) else _name(self.service)
        return f"{self.endpoint}/{service}.{_name(self.operation)}"

    def start(self, args: Sequence[Any], *, name: str, ident: str) -> Awaitable[Any]:
        """Start the operation for step (or compensation) ``ident``, shown as ``name``;
        what to await for its result."""
        info = workflow.info()
        headers = RunningStep(info.workflow_id, info.run_id, ident).nexus_headers()
        client = workflow.create_nexus_client(endpoint=self.endpoint, service=self.service)
        # Nexus itself is given no timeout: when it times an operation out, it does not
        # cancel it (a workflow behind it runs on, and may take effect after the
        # compensation). The saga's own timer cancels it through Nexus instead.
        operation = client.execute_operation(
            self.operation,
            args[0] if args else None,
            output_type=self.output_type,
            cancellation_type=self.cancellation_type,
            headers=headers,
            summary=PublicText(name),
        )
        if self.schedule_to_close_timeout is None:
            return operation
        return _within(operation, self.schedule_to_close_timeout)


async def _within(operation: Awaitable[Any], limit: timedelta) -> Any:
    """``operation``'s result; past ``limit``, cancel it (through Nexus: waiting as its
    cancellation type says) and raise a schedule-to-close ``TimeoutError``, which the
    saga reads as a step that may have taken effect."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(limit.total_seconds(), expire)
    try:
        result = await operation
    except BaseException:
        if not expired:
            raise
        task.uncancel()  # the cancel was this timer's: the step's task goes on
        raise TimeoutError(
            "operation timed out", type=TimeoutType.SCHEDULE_TO_CLOSE, last_heartbeat_details=[]
        ) from None
    finally:
        timer.cancel()
    if expired:  # it completed all the same while being cancelled: it took effect
        task.uncancel()
    return result


def _name(thing: Any) -> str:
    """A service class's or an operation's Nexus name (or its Python name)."""
    if isinstance(thing, str):
        return thing
    definition = getattr(thing, "__nexus_service__", None)
    if definition is not None:
        return str(definition.name)
    return str(getattr(thing, "name", None) or getattr(thing, "__name__", thing))
