"""A short chaos soak in CI: 50 trip sagas, one worker SIGKILL, no server restart."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.timeout(240)
def test_chaos_smoke_leaves_the_world_coherent() -> None:
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
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "| incoherent | 0 |" in run.stdout
    assert "| duplicate bookings | 0 |" in run.stdout
    assert "| worker SIGKILL | 1 |" in run.stdout
