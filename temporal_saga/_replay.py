"""Replaying recorded histories against workflow code: the check both
``temporal-saga replay-check`` (``client``) and ``testing.replay`` make.

A history the code no longer matches is reported as :class:`Broken`, its reason in
one line and, where the SDK says an activity id moved, in saga terms (which step the
history has, which the code starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from ._protocol import StepId, parse_step_id
from ._sdk import workflow_name
from .client import SagaPlugin

FETCHES = 10  # histories downloaded at once


@dataclass(frozen=True)
class Broken:
    """A history the new code does not replay."""

    workflow_id: str
    run_id: str | None
    reason: str


@dataclass(frozen=True)
class ReplayReport:
    """What a replay found: how many histories replayed, and those that broke."""

    replayed: int
    broken: list[Broken]


def workflow_types(classes: Sequence[type]) -> list[str]:
    """The workflow type names of ``classes``."""
    names = []
    for cls in classes:
        name = workflow_name(cls)
        if name is not None:
            names.append(name)
    return names


def read_history_file(path: Path) -> WorkflowHistory:
    """A history as ``temporal workflow show --output json`` (or the SDK) writes it.

    Raises:
        ValueError: Not a readable history.
    """
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not a workflow history: not JSON ({err})") from None
    try:
        started = data["events"][0]["workflowExecutionStartedEventAttributes"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(
            f"{path}: not a workflow history: no events, or its first is not the workflow's "
            "start (save one with `temporal workflow show --output json`)"
        ) from None
    try:
        return WorkflowHistory.from_json(started.get("workflowId") or path.stem, data)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a workflow history ({type(err).__name__}: {err})") from None


async def histories_from_server(
    client: Client, query: str, limit: int
) -> AsyncIterator[WorkflowHistory]:
    """The histories of up to ``limit`` workflows matching ``query``, newest first."""
    fetching = asyncio.Semaphore(FETCHES)

    async def fetch(workflow_id: str, run_id: str) -> WorkflowHistory:
        async with fetching:
            return await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()

    pending: list[asyncio.Task[WorkflowHistory]] = []
    async for execution in client.list_workflows(query, limit=limit):
        pending.append(asyncio.create_task(fetch(execution.id, execution.run_id)))
    for task in pending:
        yield await task


def histories_of(
    classes: Sequence[type],
    *,
    files: Sequence[Path] = (),
    client: Client | None = None,
    query: str | None = None,
    limit: int = 1000,
) -> AsyncIterator[WorkflowHistory]:
    """The histories to replay: from ``files`` if any are given, else the newest
    ``limit`` of ``classes``' workflow types on the server (narrowed by ``query``).

    Raises:
        ValueError: A file that is not a history, or neither files nor a client.
    """
    if files:
        return each_of([read_history_file(Path(f)) for f in files])
    if client is None:
        raise ValueError("replay: give history files, or a client to fetch histories with")
    types = ", ".join(f'"{name}"' for name in workflow_types(classes))
    where = f"WorkflowType IN ({types})"
    if query:
        where = f"({where}) AND ({query})"
    return histories_from_server(client, where, limit)


async def each_of(items: Sequence[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    """``items`` as the async iterator the replayer takes."""
    for item in items:
        yield item


async def replay(
    histories: AsyncIterator[WorkflowHistory], classes: Sequence[type]
) -> ReplayReport:
    """Replay ``histories`` against the workflow ``classes``, in this process."""
    quiet = Runtime(telemetry=TelemetryConfig(logging=None, metrics=None))  # we report
    replayer = Replayer(
        workflows=list(classes),
        plugins=[SagaPlugin()],
        interceptors=[_RecordStarts()],
        runtime=quiet,
    )
    broken: list[Broken] = []
    replayed = 0
    async with replayer.workflow_replay_iterator(histories) as results:
        async for result in results:
            replayed += 1
            started = _STARTED.pop(_run_id(result.history) or "", [])
            if result.replay_failure is not None:
                reason = _reason(result.replay_failure)
                added = _step_the_history_lacks(result.history, started)
                if added is not None and not reason.startswith("saga "):
                    reason = (
                        f"saga {added.saga!r}: the new code starts step {added.step!r}, which "
                        f"the history never started (a step added without since=) [{reason}]"
                    )
                broken.append(Broken(result.history.workflow_id, _run_id(result.history), reason))
    return ReplayReport(replayed=replayed, broken=broken)


# The activity ids each replayed run's code started, by run id: where a replay breaks
# because the code starts a step the history never had (added after the others, its
# command meets the workflow's completion), the report can name it.
_STARTED: dict[str, list[str]] = {}


class _RecordStarts(Interceptor):
    """Records the activities a replayed workflow's code starts (see ``_STARTED``)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Inbound


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        if input.activity_id:
            _STARTED.setdefault(workflow.info().run_id, []).append(input.activity_id)
        return super().start_activity(input)


def _step_the_history_lacks(history: WorkflowHistory, started: list[str]) -> StepId | None:
    """The first saga step the code started that the history never scheduled."""
    scheduled = {
        event.activity_task_scheduled_event_attributes.activity_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    }
    for activity_id in started:
        if activity_id not in scheduled:
            return parse_step_id(activity_id)
    return None


_ID_MISMATCH = re.compile(
    r"Activity id of scheduled event '(?P<history>[^']*)' does not match "
    r"activity id of activity command '(?P<code>[^']*)'"
)
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


def _reason(error: Exception) -> str:
    """The failure in one line: the SDK core's message when it wraps one."""
    text = str(error).strip()
    found = _CORE_MESSAGE.search(text)
    if found:
        text = found.group(1).replace('\\"', '"')
    text = re.sub(r"^\d+: ", "", text)  # the core's error code
    line = text.splitlines()[0] if text else type(error).__name__
    moved = _ID_MISMATCH.search(line)
    if moved:  # say it in saga terms: which step the history has, which the code starts
        was, now = parse_step_id(moved["history"]), parse_step_id(moved["code"])
        if was is not None and now is not None:
            return (
                f"saga {was.saga!r}: the new code starts step {now.step!r} where the history "
                f"started {was.step!r} (a step added, renamed or moved without "
                f"since=/until=) [{line}]"
            )
    if "Failed decoding" in line and not (
        os.environ.get("TEMPORAL_SAGA_KEYS") or os.environ.get("TEMPORAL_SAGA_KEY_FILE")
    ):
        return (
            f"{line} (its payloads may be encrypted: give the keys in TEMPORAL_SAGA_KEYS "
            "or TEMPORAL_SAGA_KEY_FILE)"
        )
    return line


def _run_id(history: WorkflowHistory) -> str | None:
    if not history.events:
        return None
    started = history.events[0].workflow_execution_started_event_attributes
    return started.original_execution_run_id or None
