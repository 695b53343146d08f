"""The benchmarks' processes: a dev server and workers of their own, and their CPU time.

The worker runs in its own process, as ``worker.py`` does in production, so that its CPU
time per saga can be read apart from the client's and the server's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from temporalio.client import Client

from temporal_saga._sdk import local_temporal_cli
from temporal_saga.client import SagaPlugin, data_converter

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    port: int, db: Path | None = None, namespaces: tuple[str, ...] = ()
) -> list[str]:
    """``temporal server start-dev`` on ``port``, headless, with ``SagaStatus`` registered
    (and ``namespaces`` made besides ``default``)."""
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
    command += [arg for namespace in namespaces for arg in ("--namespace", namespace)]
    return command + (["--db-filename", str(db)] if db is not None else [])


def start_server(port: int, log: Path, namespaces: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A dev server in memory (with ``namespaces`` besides ``default``), its output in
    ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            server_command(port, namespaces=namespaces), stdout=out, stderr=subprocess.STDOUT
        )


def start_worker(
    address: str, queue: str, log: Path, *, gc_stats: Path | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """``python -m bench.worker`` polling ``queue`` (``env`` adds to the environment;
    ``gc_stats``: where it reports its garbage collection, see :func:`gc_stats`).

    The worker may write bytecode even where ``PYTHONDONTWRITEBYTECODE`` is set (as on
    some CI machines): the workflow sandbox imports the workflow module afresh for every
    workflow run, and without a ``.pyc`` it compiles the source each time, a cost no
    deployed worker pays and which would dilute every figure measured here.
    """
    environment = {**os.environ, **env}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.worker", "--address", address, "--queue", queue),
                *(("--gc-stats", str(gc_stats)) if gc_stats else ()),
            ],
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


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of the process ``pid``'s threads so far, by kind (Linux): ``event loop``
    (the main thread: activities, polling, payloads), ``workflow threads`` (its other
    Python threads: the SDK runs workflow activations there) and ``SDK core`` (the
    SDK's Rust threads)."""
    seconds: dict[str, float] = defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if int(tid) == pid:
            kind = "event loop"
        elif name.startswith("python"):
            kind = "workflow threads"
        else:
            kind = "SDK core"
        seconds[kind] += (int(fields[11]) + int(fields[12])) / _TICKS
    return dict(seconds)


def gc_stats(worker: subprocess.Popen[bytes], path: Path, seconds: float = 10) -> dict[str, Any]:
    """A worker started with ``gc_stats=path``'s garbage collection so far: CPU seconds
    (in all threads), collections, full ones and their seconds."""
    before = json.loads(path.read_text())["report"] if path.exists() else 0
    worker.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + seconds
    while True:
        if path.exists():
            stats: dict[str, Any] = json.loads(path.read_text())
            if stats["report"] > before:
                return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {worker.pid} did not report its GC in {seconds} s")
        time.sleep(0.01)


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
