"""A short chaos soak in CI: 50 trip sagas, one worker SIGKILL, no server restart, every
payload encrypted (the clear path is the same engine without the codec), the services
on PostgreSQL (`make chaos` runs 1,000 sagas by hand, on SQLite and on PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from temporal_saga.encryption._codec import new_key

from .conftest import ROOT


@pytest.mark.timeout(240)
def test_chaos_smoke_leaves_the_world_coherent() -> None:
    keys = {"TEMPORAL_SAGA_KEYS": new_key("chaos")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--sagas",
            "50",
            "--kills",
            "1",
            "--no-server-restart",
            "--bound",
            "150",
            "--database",
            "postgres",  # make chaos runs both; the other tests mostly run on SQLite
        ],
        cwd=ROOT,
        env={**os.environ, **keys},
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "| incoherent | 0 |" in run.stdout
    assert "| duplicate bookings | 0 |" in run.stdout
    assert "| worker SIGKILL | 1 |" in run.stdout
    assert "| payload encryption | on |" in run.stdout
    assert "| services' database | PostgreSQL |" in run.stdout
