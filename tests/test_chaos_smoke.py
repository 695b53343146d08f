"""A short chaos soak in CI: 50 trip sagas, one worker SIGKILL, no server restart;
once in clear and once with every payload encrypted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from temporal_saga.encryption._codec import new_key

from .conftest import ROOT


@pytest.mark.timeout(240)
@pytest.mark.parametrize("encryption", ["off", "on"])
def test_chaos_smoke_leaves_the_world_coherent(encryption: str) -> None:
    keys = {"TEMPORAL_SAGA_KEYS": new_key("chaos")} if encryption == "on" else {}
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
        env={**os.environ, **keys},
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "| incoherent | 0 |" in run.stdout
    assert "| duplicate bookings | 0 |" in run.stdout
    assert "| worker SIGKILL | 1 |" in run.stdout
    assert f"| payload encryption | {encryption} |" in run.stdout
