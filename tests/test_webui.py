"""The Temporal Web UI shows a failed saga readably (headless Chromium, real dev server)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from temporalio.client import Client

from .conftest import WorkerFactory
from .helpers import ACTIVITIES, WORKFLOWS, fail_saga, spec
from .scripted import ScriptedStep

CHROMIUM = "/usr/bin/chromium"
# The README shows these screenshots; UPDATE_SCREENSHOTS=1 rewrites them in docs/.
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="needs Debian's chromium (apt-get install chromium); CI installs it",
    ),
]


async def test_web_ui_shows_step_names_and_the_trace(
    client: Client, task_queue: str, worker: WorkerFactory, ui_url: str, tmp_path: Path
) -> None:
    shots = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    from playwright.async_api import async_playwright

    s = spec(
        ScriptedStep(name="book plane ticket", sleep=0.3),
        ScriptedStep(name="book hotel room", fail="no available hotel rooms"),
        ScriptedStep(name="buy tourist tickets", sleep=0.3),
    )
    workflow_id = f"saga-{s.run}"
    # The worker stays up: the UI asks it for the current details (the live trace).
    async with worker(workflows=WORKFLOWS, activities=ACTIVITIES):
        await fail_saga(client, task_queue, s)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{ui_url}/namespaces/default/workflows/{workflow_id}")
            # The timeline labels each activity with its summary: the step's name.
            await page.get_by_text("undo_step • undo book plane ticket").wait_for(timeout=30_000)
            # "<activity type> • <summary>" labels, one per activity.
            labels = await page.get_by_text(" • ").all_text_contents()
            timeline_text = "\n".join(labels)
            await page.screenshot(path=str(shots / "webui-timeline.png"))
            # The workflow's current details hold the trace.
            await page.get_by_text("User Metadata").first.click()
            for _ in range(6):  # the UI queries the worker; "r" asks again
                # The UI renders the markdown details in a sandboxed iframe.
                details = "\n".join([await frame.content() for frame in page.frames])
                if "end saga (no available hotel rooms)" in details:
                    break
                await page.wait_for_timeout(2500)
                await page.keyboard.press("r")
            await page.screenshot(path=str(shots / "webui-trace.png"))
            await browser.close()
    for name in ("book plane ticket", "book hotel room", "buy tourist tickets"):
        assert name in timeline_text
        assert name in details
    for name in ("undo book plane ticket", "undo buy tourist tickets"):
        assert name in timeline_text
    assert "undo book hotel room" not in timeline_text
    assert "book hotel room (no available hotel rooms)" in details
    assert "end saga (no available hotel rooms)" in details
