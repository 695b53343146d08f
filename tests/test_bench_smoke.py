"""The benchmark runs end to end (a few sagas; no assertion about speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from .conftest import ROOT, server_address


def run_bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` from the repo; it must succeed."""
    run = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_bench_smoke(env: WorkflowEnvironment, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = run_bench("bench.compare", "--smoke", "--address", server_address(env), "--out", str(out))
    results = json.loads(out.read_text())
    for case in ("success, json", "failure, json", "success, pydantic", "failure, pydantic"):
        figures = results["compare"][case]
        for name in ("hand-written", "hand-written, summaries", "temporal_saga"):
            assert figures[name]["throughput"]["median"] > 0
            assert figures[name]["worker_cpu_ms_per_saga"]["median"] > 0
            assert figures[name]["events_per_saga"] > 10
            assert figures[name]["workflow_tasks_per_saga"] >= 2
        assert figures["ratios"]["temporal_saga / hand-written, summaries"]["of_medians"] > 0
        assert figures["ratios"]["hand-written, summaries / hand-written"]["of_medians"] > 0
    # (Exact history-event equality is checked deterministically in test_engine.py; here
    # concurrent sagas share workflow tasks at random, so counts vary run to run.)
    side = results["side-by-side"]
    assert set(side["worker_cpu_ms_per_saga"]) == {
        "hand-written",
        "hand-written, summaries",
        "temporal_saga",
    }
    assert all(len(cpu) == 2 and min(cpu) > 0 for cpu in side["rounds"].values())
    assert side["worker_cpu_ratios"]["temporal_saga / hand-written, summaries"]["median"] > 0
    assert "| **temporal_saga / hand-written, summaries, worker CPU per saga** |" in run.stdout
    went = side["where_the_cpu_went"]["temporal_saga"]
    assert went["event loop"]["median"] > 0 and went["workflow threads"]["median"] > 0
    assert went["garbage collection"]["median"] >= 0
    assert went["full collections per 1,000 sagas"] >= 0
    extra = side["helper_extra_ms_per_saga"]["hand-written, summaries"]
    assert {"total", "event loop", "workflow threads", "garbage collection"} <= set(extra)
    assert "| side by side, worker CPU ms/saga (medians) |" in run.stdout
    head = results["head-to-head"]
    assert all(len(rounds) == 2 for rounds in head["throughput_rounds"].values())
    assert all(s["median"] > 0 for s in head["throughput"].values())
    assert all(s["median"] > 0 for s in head["cpu_ms_per_saga"].values())
    pairs = ["temporal_saga / hand-written", "temporal_saga / hand-written, summaries"]
    pairs.append("hand-written, summaries / hand-written")  # what step names cost
    for pair in pairs:
        assert head["ratios"][pair]["median"] > 0
        assert head["cpu_ratios"][pair]["median"] > 0
    assert "| **temporal_saga / hand-written, summaries, sagas/s** |" in run.stdout
    assert results["depth"]["cpu_per_step_growth"] > 0
    assert "| success, json | **temporal_saga / hand-written, summaries** |" in run.stdout
    assert results["concurrency"]["high / low"]["temporal_saga"] > 0
    assert results["import"]["temporal_saga, imported plainly, no plugin"]["median"] > 0
    assert results["encryption"]["helper / hand with summaries, both encrypted"] > 0
    assert "| helper encrypted / clear" in run.stdout


def test_the_instruction_count_replays_every_contender(env: WorkflowEnvironment) -> None:
    # The count itself needs valgrind and minutes; CI checks the recording and replays.
    run = run_bench(
        "bench.instructions", "--smoke", "--sagas", "3", "--address", server_address(env)
    )
    assert "replayed every contender's histories" in run.stdout


def test_the_table_shows_the_phases_measured_and_only_those() -> None:
    from bench.compare import table

    shown = table({"width": {"8": {"seconds": 1.1, "relative_to_one_step": 1.1}}})
    assert "| 8 × 1 s steps | 1.10 |" in shown
    assert "contender" not in shown  # no compare phase, no compare rows (was a KeyError)


def test_event_bench_smoke(env: WorkflowEnvironment) -> None:
    run = run_bench(
        "bench.events", "--sagas", "4", "--rounds", "2", "--address", server_address(env)
    )
    assert "| history events per workflow | 12 | 12 | 1.00 |" in run.stdout, run.stdout
    assert "| request to answer, median |" in run.stdout


def test_barrier_bench_smoke() -> None:
    run = run_bench("bench.barrier", "--calls", "20", "--rounds", "1", "--trips", "3")
    assert "| SQLite, step (insert) |" in run.stdout, run.stdout
    assert "| PostgreSQL, compensation (update) |" in run.stdout, run.stdout
    assert "| PostgreSQL, trips/s |" in run.stdout, run.stdout


def test_nexus_bench_smoke() -> None:
    run = run_bench("bench.nexus", "--sagas", "3", "--rounds", "1")
    assert "| saga, Nexus step |" in run.stdout, run.stdout
    assert "| hand-written Nexus call |" in run.stdout, run.stdout
