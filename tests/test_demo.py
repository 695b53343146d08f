"""`make demo` stops what it started, also when it is stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, free_port


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(240)
def test_a_kept_demo_stopped_with_sigterm_stops_its_dev_server_and_workers(
    tmp_path: Path,
) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "demo.py"), "--keep"],
        cwd=tmp_path,  # its data/ (dev server database, services) goes here
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "TEMPORAL_UI_PORT": str(free_port()),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    printed = []
    try:
        for line in demo.stdout:
            printed.append(line)
            if line.startswith("Kept running"):
                break
        assert printed and printed[-1].startswith("Kept running"), "".join(printed)
        started = children(demo.pid)
        # The dev server, the worker and the insurer's (another team's), and the
        # Node.js car-rental worker if it runs.
        cars = "Car rental: starting" in "".join(printed)
        assert len(started) == 3 + cars, started
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, "".join(printed) + rest
    assert "Demo finished: everything as expected." in rest
    # What the README says the demo shows (CI runs the demo only here, and encrypted).
    shown = "".join(printed)
    assert "✔️ end saga (success)" in shown  # Maria
    assert "❌ end saga (no available hotel rooms)" in shown  # Kevin
    assert "✔️ payment confirmed" in shown  # Maria's, by the provider's event
    assert "❌ end saga (no 'payment' event within 5 seconds)" in shown  # Omar
    # Omar's insurance, bought over Nexus from the insurer's namespace, cancelled there.
    assert "✔️ cancel travel insurance" in shown
    assert "✔️ insurer (another team, over Nexus): Maria's policy IN-" in shown
    assert "✔️ refund card" in shown  # Omar's charge
    assert "❗️ waiting for a human: book plane ticket" in shown  # Lena, then resolved
    assert "✔️ cancel plane ticket booking (resolved by hand: refunded at the" in shown
    assert ("✔️ cancel car rental" in shown) is cars  # by the Node.js service
    # Each trip's picture (temporal-saga show ID --graph svg), in its final state.
    finals = {
        "maria": "SUCCEEDED",
        "kevin": "COMPENSATED",
        "omar": "COMPENSATED",
        "lena": "COMPENSATED",
    }
    for traveller, status in finals.items():
        picture = (tmp_path / "data" / f"trip-{traveller}.svg").read_text()
        assert picture.startswith("<svg") and f": {status}" in picture
        assert "book plane ticket" in picture and "buy travel insurance" in picture
    assert "resolved by hand: refunded at the" in (tmp_path / "data" / "trip-lena.svg").read_text()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if alive(pid)], "left running after SIGTERM"
