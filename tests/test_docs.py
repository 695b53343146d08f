"""Every Python block of the README and docs/ runs as pasted, against the dev server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from .conftest import server_address
from .helpers import check_first_saga_output, write_first_saga
from .readme_blocks import DOCUMENTS, ROOT, Block, blocks, marked

PYTHON = [b for document in DOCUMENTS for b in blocks(document) if b.lang == "python"]
SNIPPETS = [b for b in PYTHON if b.mark and b.mark.startswith("in a workflow, with shop.py")]
# Excerpts of the repository's files, in any language (the JavaScript service's too).
EXCERPTS = [
    b
    for document in DOCUMENTS
    for b in blocks(document)
    if b.mark and b.mark.startswith("excerpt of ")
]


def test_every_python_block_is_marked_for_a_test() -> None:
    assert len(PYTHON) >= 8
    for block in PYTHON:
        assert block.mark is not None, f"{block.document}: untested Python block:\n{block.code}"
        assert block.mark.startswith(("file ", "in a workflow, with shop.py", "excerpt of "))


@pytest.mark.parametrize("block", EXCERPTS, ids=lambda b: b.mark)
def test_excerpts_are_what_the_files_say(block: Block) -> None:
    assert block.mark is not None
    source = (ROOT / block.mark.removeprefix("excerpt of ")).read_text()
    # Every line, in order, as the file has it (indentation aside).
    lines = [line.strip() for line in source.splitlines()]
    wanted = [line.strip() for line in block.code.splitlines()]
    first = lines.index(wanted[0])
    assert lines[first : first + len(wanted)] == wanted


def run(
    command: list[str], cwd: Path, env: WorkflowEnvironment
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": server_address(env),
            "TEMPORAL_UI_URL": "http://localhost:8233",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_first_saga_runs_as_pasted_and_prints_what_the_readme_shows(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_first_saga(tmp_path)
    ran = await asyncio.to_thread(run, [sys.executable, "run_shop.py"], tmp_path, env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    order_id = check_first_saga_output(ran.stdout)
    # "temporal-saga show <id> prints the same trace (exit code 3: compensated)"
    shown = await asyncio.to_thread(
        run, [sys.executable, "-m", "temporal_saga", "show", order_id], tmp_path, env
    )
    assert shown.returncode == 3, shown.stderr
    assert shown.stdout.startswith(marked("output of run_shop.py").split("\nWeb UI:")[0])


RUN_SNIPPET = """
import asyncio, os, sys, uuid
from contextlib import AsyncExitStack
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker
import snippet
from temporal_saga import SagaFailed
from temporal_saga.client import connect

ACTIVITIES = [snippet.reserve_stock, snippet.release_stock, snippet.book_courier,
              snippet.cancel_courier, snippet.charge_card]

async def main() -> None:
    client = await connect()
    queue = f"snippet-{uuid.uuid4()}"
    async with AsyncExitStack() as workers:
        for name in [queue, *sys.argv[1:]]:
            await workers.enter_async_context(Worker(
                client, task_queue=name, workflows=[snippet.Snippet], activities=ACTIVITIES))
        try:
            await client.execute_workflow(snippet.Snippet.run, id=queue, task_queue=queue)
            print("SUCCEEDED")
        except WorkflowFailureError as err:
            failure = SagaFailed.from_error(err)
            assert failure is not None, err
            undone = sorted(s.name for s in failure.state.steps
                            if s.compensation and s.compensation.error is None)
            print(failure.state.status.value, failure.reason, undone)

asyncio.run(main())
sys.stdout.flush()
os._exit(0)  # the SDK can crash at interpreter teardown (sdk-python issue 300)
"""


@pytest.mark.parametrize("block", SNIPPETS, ids=lambda b: f"{b.document}:{b.code[:40]}")
async def test_snippets_run_inside_a_workflow(
    block: Block, env: WorkflowEnvironment, tmp_path: Path
) -> None:
    assert block.mark is not None
    # "in a workflow, with shop.py; workers on Q; succeeds" or "...; undoes A, B"
    options = dict(part.partition(" ")[::2] for part in block.mark.split("; ")[1:])
    queues = options.get("workers", "").removeprefix("on ").replace(",", " ").split()
    if "succeeds" in options:
        expected = "SUCCEEDED"
    else:
        undone = sorted(options["undoes"].split(", "))
        expected = f"COMPENSATED card declined {undone}"  # the shop's card is always declined
    (tmp_path / "snippet.py").write_text(
        f"{marked('file shop.py')}\n\n@workflow.defn\nclass Snippet:\n    @workflow.run\n"
        f"    async def run(self) -> None:\n{textwrap.indent(block.code, ' ' * 8)}"
    )
    (tmp_path / "run_snippet.py").write_text(RUN_SNIPPET)
    ran = await asyncio.to_thread(run, [sys.executable, "run_snippet.py", *queues], tmp_path, env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == expected


def test_every_dev_server_the_docs_start_has_the_sagas_search_attribute() -> None:
    """``temporal server start-dev`` as the README and docs/ write it registers
    ``SagaStatus``, which ``search_attributes=True`` and ``temporal-saga list`` need."""
    for document in DOCUMENTS:
        text = document.read_text().replace("\\\n", " ")  # lines continued with a backslash
        for line in text.splitlines():
            if "server start-dev" in line and "`temporal server start-dev`" not in line:
                assert "--search-attribute SagaStatus=Keyword" in line, (document.name, line)


def test_every_install_line_says_where_the_package_comes_from() -> None:
    """temporal-saga is installed from a clone or a wheel, not from an index: no line
    may ask an index for it, or assume the clone's folder name."""
    for document in DOCUMENTS:
        for line in document.read_text().splitlines():
            if "pip install" in line:
                assert "'temporal-saga[" not in line and "./temporal-saga" not in line, (
                    document.name,
                    line,
                )
