"""What ``pip install`` ships: the library alone, usable from a project of one's own:
the README's first saga runs from a wheel installed in a fresh venv, outside the repo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from .conftest import ROOT, server_address
from .helpers import check_first_saga_output, write_first_saga


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("temporal_saga-*.whl")
    return built


def test_the_wheel_holds_the_library_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"temporal_saga", "temporal_saga-0.1.0.dist-info"}, tops
    assert "temporal_saga/py.typed" in names
    assert {
        "temporal_saga/client/__init__.py",
        "temporal_saga/encryption/__init__.py",
        "temporal_saga/testing/pytest_plugin.py",
    } <= set(names)
    entry_points = zipfile.ZipFile(wheel).read("temporal_saga-0.1.0.dist-info/entry_points.txt")
    assert b"temporal-saga = temporal_saga.client._cli:entry_point" in entry_points
    # The testing kit's pytest plugin is opt-in: no pytest11 entry point loads it.
    assert b"pytest11" not in entry_points
    assert any(name.endswith("/LICENSE") for name in names)


@pytest.mark.timeout(600)
async def test_the_installed_wheel_runs_a_saga_outside_the_repository(
    wheel: Path, env: WorkflowEnvironment, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=480,
    )
    project = tmp_path / "project"  # no trace of this repository on its path
    project.mkdir()
    write_first_saga(project)  # the README's first saga, as pasted
    clean = {
        "TEMPORAL_ADDRESS": server_address(env),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "run_shop.py"],
        cwd=project,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    order_id = check_first_saga_output(ran.stdout)
    # The console script, without the encryption extra: what needs it says how to get it.
    script = str(venv / "bin" / "temporal-saga")
    shown = subprocess.run(
        [script, "show", order_id, "-o", "json"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 3, shown.stderr  # compensated
    assert '"status": "COMPENSATED"' in shown.stdout
    for command in (["new-key"], ["codec-server"]):
        refused = subprocess.run([script, *command], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr.startswith("temporal-saga: encryption is not installed: ")
        assert "pip install '<clone or wheel of temporal-saga>[encryption]'" in refused.stderr
        assert refused.stderr.count("\n") == 1
