"""The Temporal Web UI shows a failed saga readably (headless Chromium, real dev server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import BrowserContext, Frame
from playwright.async_api import Error as PlaywrightError
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from insurer.service import INSURER_NAMESPACE
from temporal_saga import SagaStatus
from temporal_saga._protocol import SAGA_STATUS_ATTRIBUTE
from temporal_saga.client import SagaPlugin, data_converter, load_state, watch
from temporal_saga.encryption import EncryptionCodec, start_codec_server
from workflows.trip import BuyTripPackage

from .conftest import free_port, temporal_binary
from .helpers import (
    NAME,
    PASSPORT,
    secret_trip,
    trip,
    trip_worker_in_process,
)

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


async def content_of(frame: Frame) -> str:
    """A frame's HTML, or nothing if the UI replaced the frame meanwhile (it re-renders)."""
    try:
        return await frame.content()
    except PlaywrightError:
        return ""


async def test_web_ui_shows_step_names_and_the_trace(
    client: Client, ui_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trip example, as `make demo` runs it: Kevin's trip after Maria's."""
    from playwright.async_api import async_playwright

    shots = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    maria, kevin = (
        secret_trip("Venice").model_copy(update={"traveller": name}) for name in ("Maria", "Kevin")
    )
    workflow_id = f"trip-{uuid.uuid4().hex[:12]}"
    # The worker stays up: the UI asks it for the current details (the live trace).
    async with trip_worker_in_process(client) as queue:
        await client.execute_workflow(
            BuyTripPackage.run, maria, id=f"trip-{uuid.uuid4().hex[:12]}", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError):  # Maria took Venice's last hotel room
            await client.execute_workflow(
                BuyTripPackage.run, kevin, id=workflow_id, task_queue=queue
            )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{ui_url}/namespaces/default/workflows/{workflow_id}")
            # The timeline labels each activity with its summary: the step's name.
            await page.get_by_text("book_flight • book plane ticket").wait_for(timeout=30_000)
            # "<activity type> • <summary>" labels, one per activity.
            labels = await page.get_by_text(" • ").all_text_contents()
            timeline_text = "\n".join(labels)
            await page.screenshot(path=str(shots / "webui-timeline.png"))
            # The workflow's current details hold the trace.
            await page.get_by_text("User Metadata").first.click()
            for _ in range(6):  # the UI queries the worker; "r" asks again
                # The UI renders the markdown details in a sandboxed iframe.
                details = "\n".join([await content_of(frame) for frame in page.frames])
                if "end saga (no available hotel rooms)" in details:
                    break
                await page.wait_for_timeout(2500)
                await page.keyboard.press("r")
            await page.screenshot(path=str(shots / "webui-trace.png"))
            await browser.close()
    for name in ("book plane ticket", "book hotel room", "buy tourist tickets"):
        assert name in timeline_text
        assert name in details
    for name in ("cancel plane ticket booking", "cancel tourist ticket reservations"):
        assert name in timeline_text and name in details
    assert "cancel hotel" not in timeline_text
    assert "book hotel room (no available hotel rooms)" in details
    assert "end saga (no available hotel rooms)" in details


async def test_web_ui_decodes_input_through_the_codec_server_for_signed_in_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import async_playwright

    shots = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    codec = EncryptionCodec({"k1": os.urandom(32)})
    ui_port, codec_port = free_port(), free_port()
    ui, codec_url = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{codec_port}"
    server = await start_codec_server(codec, "s3cret", port=codec_port, origin=ui)
    workflow_id = f"trip-{uuid.uuid4()}"
    try:
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            data_converter=data_converter(codec=codec),
            plugins=[SagaPlugin()],
            ui=True,
            ui_port=ui_port,
            # The Web UI decodes through the codec server; the insurer's namespace.
            dev_server_extra_args=[
                *("--ui-codec-endpoint", codec_url),
                *("--namespace", INSURER_NAMESPACE),
            ],
            search_attributes=[SAGA_STATUS_ATTRIBUTE],
            dev_server_log_level="error",
        ) as env:
            async with trip_worker_in_process(env.client) as queue:
                await env.client.execute_workflow(
                    BuyTripPackage.run, secret_trip("Rome"), id=workflow_id, task_queue=queue
                )
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=shutil.which("chromium") or CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page_url = f"{ui}/namespaces/default/workflows/{workflow_id}"

                async def workflow_page(
                    context: BrowserContext, shows: str, screenshot: str
                ) -> str:
                    page = await context.new_page()
                    await page.goto(page_url)
                    # Step names are public text: readable with or without the codec.
                    # The timeline shows the latest first, and renders only the rows
                    # in view: the card's charge, the trip's last activity. (Playwright
                    # deems much of the UI's text hidden, its layout has 0-size
                    # wrappers: poll the document instead.)
                    for _ in range(60):
                        content = await page.content()
                        if shows in content and "charge_card • charge card" in content:
                            break
                        await page.wait_for_timeout(500)
                    assert "charge_card • charge card" in content
                    await page.screenshot(path=str(shots / screenshot))
                    return content

                # Settings the Web UI keeps in local storage: this browser uses the codec
                # server with credentials (its session cookie).
                with_credentials = {
                    "origins": [
                        {
                            "origin": ui,
                            "localStorage": [
                                {"name": "endpoint", "value": json.dumps(codec_url)},
                                {"name": "includeCredentials", "value": "true"},
                                {"name": "overrideRemoteCodecConfiguration", "value": "true"},
                            ],
                        }
                    ]
                }
                stranger = await browser.new_context(storage_state=with_credentials)
                anonymous_view = await workflow_page(
                    stranger, "Codec Server could not connect", "webui-encrypted.png"
                )
                operator = await browser.new_context(storage_state=with_credentials)
                sign_in = await operator.new_page()
                await sign_in.goto(codec_url)
                await sign_in.get_by_label("Token").fill("s3cret")
                await sign_in.get_by_role("button", name="Sign in").click()
                await sign_in.get_by_text("Signed in.").wait_for(timeout=10_000)
                operator_view = await workflow_page(operator, NAME, "webui-decoded.png")
                await browser.close()
    finally:
        await server.cleanup()
    assert NAME in operator_view and PASSPORT in operator_view
    assert NAME not in anonymous_view and PASSPORT not in anonymous_view


async def test_an_operator_finds_and_resolves_a_waiting_trip_in_the_web_ui(
    client: Client, ui_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lena's trip from `make demo` waits for a human: the operator opens the list that
    `temporal-saga list --needs-human` links to, then resolves the step from the
    workflow's page (More Actions → Send an Update), and the saga ends as the CLI's
    `resolve` would have left it."""
    from playwright.async_api import async_playwright

    shots = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    monkeypatch.setenv("TRIP_DATA_DIR", str(tmp_path / "services"))  # in-process activities
    lena = trip("Lena", faults={"airline": "no_refund"})
    workflow_id = f"trip-{uuid.uuid4().hex[:12]}"
    async with trip_worker_in_process(client) as queue:
        await client.execute_workflow(  # Maria takes Venice's last hotel room
            BuyTripPackage.run, trip("Maria"), id=f"trip-{uuid.uuid4().hex[:12]}", task_queue=queue
        )
        handle = await client.start_workflow(
            BuyTripPackage.run, lena, id=workflow_id, task_queue=queue
        )
        async for state in watch(handle):
            if state.status is SagaStatus.NEEDS_HUMAN:
                break
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            # The list `temporal-saga list --needs-human` links to (see test_needs_human).
            query = quote('SagaStatus="NEEDS_HUMAN"', safe="")
            await page.goto(f"{ui_url}/namespaces/default/workflows?query={query}")
            for _ in range(20):  # visibility is eventually consistent (slower under load)
                with contextlib.suppress(PlaywrightError):
                    await page.locator(f"a[href*='{workflow_id}']").first.wait_for(timeout=3000)
                    break
                await page.reload()
            listed = await page.content()
            await page.screenshot(path=str(shots / "webui-needs-human.png"))
            await page.goto(f"{ui_url}/namespaces/default/workflows/{workflow_id}")
            await page.get_by_role("button", name="More Actions").click()
            await page.locator("text=Send an Update >> visible=true").click()
            await page.locator("[data-testid=update-select-button] >> visible=true").click()
            # The UI offers the saga's Updates by name (from the workflow's metadata).
            resolve = page.get_by_role("option", name="saga_resolve")
            await resolve.wait_for()
            offered = await page.get_by_role("option").all_text_contents()
            await resolve.click()
            request = {
                "step": "book plane ticket",
                "note": "refunded at the airline's desk",
                "by": "ops@webui",
            }
            dialog = page.locator("[data-testid=update-confirmation-modal]")
            editor = dialog.get_by_role("textbox", name="Data")
            await editor.focus()  # (a 0-size wrapper: Playwright deems it hidden)
            await page.keyboard.insert_text(json.dumps(request))
            await page.keyboard.press("Tab")  # the UI formats the JSON as the editor blurs
            await page.wait_for_timeout(500)
            await page.screenshot(path=str(shots / "webui-update.png"))
            await dialog.get_by_role("button", name="Submit").click(timeout=10_000)
            await page.wait_for_timeout(3000)
            await page.screenshot(path=str(tmp_path / "submitted.png"))
            with contextlib.suppress(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), 30)
            await browser.close()
    assert workflow_id in listed
    assert {"saga_resolve", "saga_retry", "saga_give_up"} <= {o.strip() for o in offered}
    state, _ = await load_state(handle)
    assert state.status is SagaStatus.COMPENSATED
    assert state.step("book plane ticket").resolved == "refunded at the airline's desk"
    [action] = state.actions
    assert (action.action, action.step, action.by) == ("resolve", "book plane ticket", "ops@webui")
