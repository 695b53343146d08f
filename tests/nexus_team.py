"""Another team, for the Nexus steps' tests: its namespace, its Nexus service, its worker.

The team sells insurance through an endpoint: ``buy`` and ``cancel`` are synchronous
operations that book in the team's own SQLite file under ``temporal_saga.barrier``
(keyed by the saga step's Nexus headers); ``underwrite`` is backed by a workflow that
takes ``seconds``; ``nested`` by a saga of the team's own (two steps, the second of
which may fail). Every booking row records the idempotency key the handler saw.

The caller's saga, ``Trip``, books a flight (an activity), buys the insurance (a
Nexus step, compensated by the ``cancel`` operation or by an activity), then charges
(an activity that may fail).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import Executor
from datetime import timedelta
from pathlib import Path
from typing import Literal

import nexusrpc
import nexusrpc.handler
from pydantic import BaseModel
from temporalio import activity, nexus, workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from temporal_saga import Saga, idempotency_key
from temporal_saga.barrier import create_table, guarded
from temporal_saga.nexus import NexusOperation


class Cover(BaseModel):
    """What the team is asked for."""

    db: str  # the team's SQLite file
    holder: str
    refuse: bool = False  # buy fails: the operation failed (OperationError)
    broken: bool = False  # buy fails: the handler's non-retryable error
    seconds: float = 0  # underwrite: how long the policy takes
    undo_fails: bool = False  # cancel fails for good
    undo_seconds: float = 0  # cancel takes this long
    # buy, first attempt: touch this file once committed, then stall (to be killed)
    stall_after_commit: str | None = None
    fail_nested: bool = False  # nested: the team saga's second step fails


@nexusrpc.service
class Insurance:
    buy: nexusrpc.Operation[Cover, str]
    cancel: nexusrpc.Operation[Cover, None]
    underwrite: nexusrpc.Operation[Cover, str]
    nested: nexusrpc.Operation[Cover, str]


def _connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS policies (holder TEXT, key TEXT, status TEXT, at REAL)"
        )
        create_table(conn)
    return conn


def policies(db: str) -> list[tuple[str, str, str]]:
    """(holder, key, status) of every policy, oldest first."""
    conn = _connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT holder, key, status FROM policies")]
    finally:
        conn.close()


def book(cover: Cover) -> str:
    conn = _connect(cover.db)
    try:
        with conn:

            def insert() -> str:
                conn.execute(
                    "INSERT INTO policies VALUES (?, ?, 'ACTIVE', ?)",
                    (cover.holder, idempotency_key(), time.time()),
                )
                return f"policy for {cover.holder}"

            policy = str(guarded(conn, insert))
    finally:
        conn.close()
    if cover.stall_after_commit and not Path(cover.stall_after_commit).exists():
        Path(cover.stall_after_commit).touch()  # committed: the test kills this worker
        time.sleep(60)
    return policy


def cancel(cover: Cover) -> None:
    time.sleep(cover.undo_seconds)
    if cover.undo_fails:
        raise ApplicationError("the insurer's desk is closed", non_retryable=True)
    conn = _connect(cover.db)
    try:
        with conn:
            guarded(
                conn,
                lambda: conn.execute(
                    "UPDATE policies SET status = 'CANCELLED' WHERE key = ?", (idempotency_key(),)
                ),
            )
    finally:
        conn.close()


@workflow.defn
class Underwrite:
    """A policy that takes a while: the workflow behind ``underwrite``."""

    @workflow.run
    async def run(self, cover: Cover) -> str:
        await workflow.sleep(cover.seconds)
        return f"underwritten for {cover.holder}"


@activity.defn
def team_step(cover: Cover) -> str:
    if cover.fail_nested and activity.info().activity_id.endswith("/issue"):
        raise ApplicationError("the underwriter said no", non_retryable=True)
    return book(cover)


@activity.defn
def team_undo(cover: Cover) -> None:
    cancel(cover)


@workflow.defn
class TeamSaga:
    """The team's own saga, run for the caller behind ``nested``."""

    @workflow.run
    async def run(self, cover: Cover) -> str:
        # An undo that fails for good does not wait for the team's human: the saga
        # fails, naming the step it could not undo (the caller's to handle).
        saga = Saga(
            "insurer's policy",
            start_to_close_timeout=timedelta(seconds=10),
            human_timeout=timedelta(0),
        )
        check = saga.step("check", team_step, cover, compensate=team_undo)
        saga.step("issue", team_step, cover, compensate=team_undo, after=[check])
        await saga.run()
        return f"nested policy for {cover.holder}"


@nexusrpc.handler.service_handler(service=Insurance)
class InsuranceHandler:
    @nexusrpc.handler.sync_operation
    async def buy(self, ctx: nexusrpc.handler.StartOperationContext, cover: Cover) -> str:
        if cover.refuse:
            raise nexusrpc.OperationError(
                f"no cover for {cover.holder}", state=nexusrpc.OperationErrorState.FAILED
            )
        if cover.broken:
            raise ApplicationError(f"no tariff for {cover.holder}", non_retryable=True)
        return await asyncio.to_thread(book, cover)  # the barrier's key: a context var

    @nexusrpc.handler.sync_operation
    async def cancel(self, ctx: nexusrpc.handler.StartOperationContext, cover: Cover) -> None:
        await asyncio.to_thread(cancel, cover)

    @nexus.workflow_run_operation
    async def underwrite(
        self, ctx: nexus.WorkflowRunOperationContext, cover: Cover
    ) -> nexus.WorkflowHandle[str]:
        return await ctx.start_workflow(Underwrite.run, cover, id=f"underwrite-{ctx.request_id}")

    @nexus.workflow_run_operation
    async def nested(
        self, ctx: nexus.WorkflowRunOperationContext, cover: Cover
    ) -> nexus.WorkflowHandle[str]:
        return await ctx.start_workflow(TeamSaga.run, cover, id=f"team-saga-{ctx.request_id}")


def team_worker(client: Client, task_queue: str, executor: Executor) -> Worker:
    """The team's worker: its Nexus service, and the workflows and activities behind
    it, on ``task_queue`` of ``client``'s namespace."""
    return Worker(
        client,
        task_queue=task_queue,
        nexus_service_handlers=[InsuranceHandler()],
        workflows=[Underwrite, TeamSaga],
        activities=[team_step, team_undo],
        activity_executor=executor,
    )


# --- The caller's side ------------------------------------------------------------------


class Plan(BaseModel):
    """A trip whose insurance the other team sells, through ``endpoint``."""

    endpoint: str
    cover: Cover
    operation: Literal["buy", "underwrite", "nested"] = "buy"
    timeout_seconds: float | None = None
    undo_by: Literal["nexus", "activity"] = "nexus"
    charge_fails: bool = False
    # A visa check beside the insurance fails after a moment; the saga cancels what
    # still runs (cancel_in_flight).
    visa_refused: bool = False


@activity.defn
def reserve_seat(plan: Plan) -> str:
    return f"flight for {plan.cover.holder}"


@activity.defn
def release_seat(plan: Plan) -> None:
    return None


@activity.defn
def charge(plan: Plan) -> str:
    if plan.charge_fails:
        raise ApplicationError("card declined", non_retryable=True)
    return "charged"


@activity.defn
def check_visa(plan: Plan) -> None:
    time.sleep(0.5)
    raise ApplicationError("visa refused", non_retryable=True)


@activity.defn
def cancel_insurance_here(cover: Cover) -> None:
    """The compensation as the caller's own activity: the same key, the same barrier."""
    cancel(cover)


@workflow.defn
class Trip:
    @workflow.run
    async def run(self, plan: Plan) -> str:
        timeout = timedelta(seconds=plan.timeout_seconds) if plan.timeout_seconds else None
        buy = NexusOperation(
            plan.endpoint, Insurance, plan.operation, schedule_to_close_timeout=timeout
        )
        undo = (
            NexusOperation(plan.endpoint, Insurance, Insurance.cancel)
            if plan.undo_by == "nexus"
            else cancel_insurance_here
        )
        saga = Saga(
            "trip",
            start_to_close_timeout=timedelta(seconds=10),
            cancel_in_flight=plan.visa_refused,
        )
        flight = saga.step("book flight", reserve_seat, plan, compensate=release_seat)
        insurance = saga.step("buy insurance", buy, plan.cover, compensate=undo, after=[flight])
        if plan.visa_refused:
            saga.step("check visa", check_visa, plan, after=[flight])
        saga.step("charge", charge, plan, after=[insurance])
        await saga.run()
        return str(insurance.result)


@workflow.defn
class TripBlock:
    """The same trip in the imperative form (``async with``)."""

    @workflow.run
    async def run(self, plan: Plan) -> str:
        buy = NexusOperation(plan.endpoint, Insurance, Insurance.buy)
        undo = NexusOperation(plan.endpoint, Insurance, Insurance.cancel)
        async with Saga("trip", start_to_close_timeout=timedelta(seconds=10)) as saga:
            await saga.step("book flight", reserve_seat, plan, compensate=release_seat)
            policy = await saga.step("buy insurance", buy, plan.cover, compensate=undo)
            await saga.step("charge", charge, plan)
        return str(policy)


@workflow.defn
class OptionsOnANexusStep:
    """A Nexus step given an activity option: refused when defined."""

    @workflow.run
    async def run(self) -> None:
        saga = Saga("bad")
        saga.step(
            "buy insurance",
            NexusOperation("insurer", Insurance, Insurance.buy),
            None,
            start_to_close_timeout=timedelta(seconds=5),
        )
        await saga.run()


CALLER_ACTIVITIES = [reserve_seat, release_seat, charge, check_visa, cancel_insurance_here]
