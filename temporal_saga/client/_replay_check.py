"""``temporal-saga replay-check``: would the new code break sagas already in flight?

Replays recorded histories (recent ones from the server, or JSON files) against the
workflow classes of the code about to be deployed, and reports each history the code
no longer matches: a nondeterminism error (a step renamed, added without ``since=``,
reordered), or any other failure of the replay.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import multiprocessing
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from temporalio.client import WorkflowHistory

from .._replay import ReplayReport, each_of, replay
from .._sdk import is_workflow_class

PER_PROCESS = 100  # at least this many histories for each process replay_check starts


def load_workflows(specs: Sequence[str]) -> list[type]:
    """The workflow classes named by ``module`` (all of its workflows) or ``module:Class``.

    Raises:
        ValueError: A module or class that does not exist, or holds no workflow.
    """
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` has it
    found: list[type] = []
    for spec in specs:
        module_name, _, class_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # not found, or broken: a syntax error, a failed import
            raise ValueError(
                f"cannot import {module_name!r}: {type(err).__name__}: {err}"
            ) from None
        if class_name:
            cls = getattr(module, class_name, None)
            if not inspect.isclass(cls) or not is_workflow_class(cls):
                raise ValueError(f"{spec!r} is not a workflow class")
            found.append(cls)
            continue
        classes = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__ and is_workflow_class(cls)
        ]
        if not classes:
            raise ValueError(f"module {module_name!r} defines no workflow")
        found.extend(classes)
    return found


async def replay_check(
    histories: AsyncIterator[WorkflowHistory], specs: Sequence[str], *, jobs: int = 1
) -> ReplayReport:
    """Replay each history against the workflows ``specs`` name (see
    :func:`load_workflows`); report those that would break.

    With ``jobs`` above 1 the histories are split over that many processes (replay is
    CPU-bound Python). The replayer gets ``SagaPlugin``: the saga data converter
    (payloads decrypted with the configured keys) and the engine shared with the
    workflow sandbox, as on a worker.
    """
    if jobs <= 1:
        return await replay(histories, load_workflows(specs))
    classes = load_workflows(specs)  # fail here, once, rather than in every process
    loaded = [h async for h in histories]
    jobs = min(jobs, len(loaded) // PER_PROCESS)  # a process costs a second or two to start
    if jobs <= 1:
        return await replay(each_of(loaded), classes)
    texts = [(h.workflow_id, h.to_json()) for h in loaded]
    chunks = [texts[i::jobs] for i in range(jobs)]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")  # no fork of the SDK's threads
    with ProcessPoolExecutor(max_workers=len(chunks) or 1, mp_context=spawn) as pool:
        reports = await asyncio.gather(
            *(loop.run_in_executor(pool, _replay_in_process, list(specs), c) for c in chunks)
        )
    return ReplayReport(
        replayed=sum(r.replayed for r in reports),
        broken=[b for r in reports for b in r.broken],
    )


def _replay_in_process(specs: list[str], histories: list[tuple[str, str]]) -> ReplayReport:
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)  # failures are the report
    loaded = [WorkflowHistory.from_json(workflow_id, text) for workflow_id, text in histories]
    return asyncio.run(replay(each_of(loaded), load_workflows(specs)))
