"""The benchmark runs end to end (a few sagas; no assertion about speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from .conftest import ROOT, server_address


def test_bench_smoke(env: WorkflowEnvironment, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.compare",
            "--smoke",
            "--address",
            server_address(env),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(out.read_text())
    for path in ("success", "failure"):
        for name in ("hand-written", "temporal_saga"):
            assert results["compare"][path][name]["throughput_median"] > 0
    # (Exact history-event equality is checked deterministically in test_engine.py; here
    # concurrent sagas share workflow tasks at random, so counts vary run to run.)
    assert results["depth"]["cpu_per_step_growth"] > 0
    assert "| success: sagas/s" in run.stdout
    assert results["encryption"]["helper / hand, both encrypted"] > 0
    assert "| encryption cost" in run.stdout
