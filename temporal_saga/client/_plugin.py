"""``SagaPlugin``: what temporal-saga needs on a client and on the workers made from it."""

from __future__ import annotations

import dataclasses

from temporalio import activity
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from .._answer import take_early_answers
from .._protocol import CHECK_ATTRIBUTE_ACTIVITY, parse_step_id
from ._converter import data_converter

# Namespaces known to have the attribute, per client: the check costs one RPC per
# worker process, not one per saga.
_REGISTERED: set[tuple[int, str, str]] = set()


@activity.defn(name=CHECK_ATTRIBUTE_ACTIVITY)
async def check_search_attribute(name: str) -> None:
    """Fail, non-retryably, if the search attribute ``name`` is not registered.

    A saga with ``search_attributes=True`` runs this (as a local activity) before its
    first upsert: upserting an attribute the namespace lacks would fail the workflow
    task forever, with nothing but a worker log line to say why.
    """
    client: Client = activity.client()
    key = (id(client), client.namespace, name)
    if key in _REGISTERED:
        return
    try:
        await client.count_workflows(f'{name} = "RUNNING"')
    except RPCError as err:
        if err.status == RPCStatusCode.UNIMPLEMENTED:
            return  # a server without visibility (the time-skipping test server)
        if err.status != RPCStatusCode.INVALID_ARGUMENT:
            raise  # the server is unwell: retried
        raise ApplicationError(
            f"the {name} search attribute is not registered on namespace "
            f"{client.namespace!r} ({err.message}); register it once: temporal operator "
            f"search-attribute create --name {name} --type Keyword",
            type="SearchAttributeNotRegistered",
            non_retryable=True,
        ) from None
    _REGISTERED.add(key)


def _saga_converter(existing: DataConverter | None) -> DataConverter:
    # Keep a converter the user chose; replace only the SDK's default.
    if existing is None or existing is DataConverter.default:
        return data_converter()
    return existing


def _share_the_engine(runner: WorkflowRunner | None) -> WorkflowRunner:
    # The sandbox re-imports, for every workflow run, each module it does not pass
    # through: a workflow module that imports temporal_saga plainly would rebuild the
    # engine's modules and pydantic models for every saga, several milliseconds of
    # worker CPU each. The engine keeps no state in its modules, so one copy serves all.
    runner = runner or SandboxedWorkflowRunner()  # the SDK's default
    if isinstance(runner, SandboxedWorkflowRunner):
        restrictions = runner.restrictions.with_passthrough_modules("temporal_saga")
        return dataclasses.replace(runner, restrictions=restrictions)
    return runner


class _CountAttempts(Interceptor):
    """Counts every attempt of a saga's steps and compensations, as the worker runs it.

    ``temporal_saga_attempts`` (counter; ``saga``, ``kind`` step or compensation,
    ``outcome`` SUCCEEDED or FAILED): workflow code cannot see attempts, the
    activity's worker can. A failed attempt may be retried; retries are the FAILED
    attempts of steps that then succeeded.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _AttemptCounter(next)


class _AttemptCounter(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> object:
        info = activity.info()
        ident = parse_step_id(info.activity_id)
        if not info.workflow_id or ident is None:
            return await self.next.execute_activity(input)  # not a saga's step
        kind = "compensation" if ident.compensation else "step"
        outcome = "FAILED"
        try:
            result = await self.next.execute_activity(input)
            outcome = "SUCCEEDED"
            return result
        finally:
            counter = activity.metric_meter().create_counter(
                "temporal_saga_attempts", "Attempts of saga steps and compensations"
            )
            counter.add(1, {"saga": ident.saga, "kind": kind, "outcome": outcome})


class _TakeEarlyAnswers(Interceptor):
    """Registers the ``saga_answer`` Update as each workflow run is created, before its
    first activation: an Update sent with the start (``start_until_step``) is handled
    before the workflow's code runs (see ``temporal_saga._answer``)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _EarlyAnswers


class _EarlyAnswers(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        take_early_answers()
        super().init(outbound)


class SagaPlugin(SimplePlugin):
    """A Temporal plugin for clients and workers that run sagas.

    It sets the saga data converter (:func:`data_converter`, unless the client was
    given a converter of its own); and on every worker made from the client, it
    registers the activity with which ``Saga(..., search_attributes=True)`` checks
    that the ``SagaStatus`` attribute exists before it first sets it, counts the
    attempts of saga activities (``temporal_saga_attempts``), takes the early-answer
    Update that ``start_until_step`` sends with a saga's start, and lets the
    workflow sandbox pass ``temporal_saga`` through instead of re-importing it for
    every workflow run. :func:`connect` adds it; with a client of your own::

        client = await Client.connect("localhost:7233", plugins=[SagaPlugin()])
    """

    def __init__(self) -> None:
        super().__init__(
            "temporal-saga",
            data_converter=_saga_converter,
            activities=[check_search_attribute],
            interceptors=[_CountAttempts(), _TakeEarlyAnswers()],
            workflow_runner=_share_the_engine,
        )
