"""A PostgreSQL server of the tests' own (Debian's package: ``.ci/run`` installs it),
started in a temporary directory on a Unix socket, as the ``postgres`` user when the
tests run as root (the server refuses to run as root)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def binaries() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (on the PATH, or Debian's directory)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A running server; yields a psycopg conninfo for its ``postgres`` database."""
    bindir = binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="saga-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    data, port = root / "data", 55432 + os.getpid() % 1000
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        yield f"host={root} port={port} user=postgres dbname=postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_database(conninfo: str) -> str:
    """A fresh database on the server; its conninfo."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return conninfo.replace("dbname=postgres", f"dbname={name}")
