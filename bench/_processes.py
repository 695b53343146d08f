"""The benchmarks' processes: a dev server and workers of their own, and their CPU time.

The worker runs in its own process, as ``worker.py`` does in production, so that its CPU
time per saga can be read apart from the client's and the server's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from temporalio.client import Client

from temporal_saga.client import SagaPlugin, data_converter
from temporal_saga.client._connect import local_temporal_cli

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(port: int, db: Path | None = None) -> list[str]:
    """``temporal server start-dev`` on ``port``, headless, with ``SagaStatus`` registered."""
    command = [
        local_temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--search-attribute",
        "SagaStatus=Keyword",
        "--log-level",
        "error",
    ]
    return command + (["--db-filename", str(db)] if db is not None else [])


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A dev server in memory, its output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(server_command(port), stdout=out, stderr=subprocess.STDOUT)


def start_worker(address: str, queue: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``python -m bench.worker`` polling ``queue`` (``env`` adds to the environment).

    The worker may write bytecode even where ``PYTHONDONTWRITEBYTECODE`` is set (as on
    some CI machines): the workflow sandbox imports the workflow module afresh for every
    workflow run, and without a ``.pyc`` it compiles the source each time, a cost no
    deployed worker pays and which would dilute every figure measured here.
    """
    environment = {**os.environ, **env}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.worker", "--address", address, "--queue", queue],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


async def connect(address: str, seconds: float = 60) -> Client:
    """A saga client for ``address``, waiting up to ``seconds`` for the server to be up."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await Client.connect(
                address, data_converter=data_converter(), plugins=[SagaPlugin()]
            )
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
