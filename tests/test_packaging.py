"""What ``pip install`` ships: the library alone, usable from a project of one's own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from .conftest import ROOT, server_address

OUTSIDE = Path(__file__).parent / "outside"


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
    for name in ("shop.py", "run_shop.py"):
        shutil.copy(OUTSIDE / name, project / name)
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "run_shop.py", server_address(env)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == (
        "COMPENSATED: SagaFailed: charge card: card declined; undone: ['book']"
    ), ran.stdout
