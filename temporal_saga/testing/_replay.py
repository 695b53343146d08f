"""Replay recorded histories against the current workflow code, from a test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client, WorkflowHistory

from .._replay import Broken, ReplayReport, each_of, histories_of
from .._replay import replay as replay_histories

__all__ = ["Broken", "ReplayReport", "replay"]


async def replay(
    workflows: Sequence[type],
    *,
    histories: Sequence[WorkflowHistory] = (),
    files: Sequence[str | Path] = (),
    client: Client | None = None,
    query: str | None = None,
    limit: int = 1000,
) -> ReplayReport:
    """Replay histories against ``workflows``; report those the code no longer matches.

    The same check as ``temporal-saga replay-check``, from a test: a step renamed,
    added or moved without ``since=``/``until=`` shows up as a :class:`Broken`
    history naming the step. Record histories with ``temporal workflow show
    --output json`` (or ``WorkflowHandle.fetch_history().to_json()``).

    Args:
        workflows: The workflow classes as the code has them now.
        histories: Histories to replay (``await handle.fetch_history()``).
        files: History files (JSON) to replay.
        client: Without histories or files: fetch the newest histories of ``workflows``' types
            from this client's server (give one made by ``connect()``, whose
            converter can read the payloads).
        query: Narrow the server's histories with this visibility query.
        limit: At most this many histories from the server.

    Raises:
        ValueError: No histories, files or client, or a file that is not a history.
    """
    if histories:
        return await replay_histories(each_of(histories), workflows)
    found = histories_of(
        workflows, files=[Path(f) for f in files], client=client, query=query, limit=limit
    )
    return await replay_histories(found, workflows)
