"""The dashboard in a real browser: a person signs in, reads the window's rows, watches a new one run.

The browser is the system's Chromium (`apt-get install chromium`), driven by Playwright, which
downloads nothing. `LISTENER_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/e2e/test_dashboard.py`
also keeps the test's screenshot there (the README's picture).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.database import as_app_user, insert_model
from tests.support.stack import DASHBOARD_TOKEN, Stack, running_listener, wait_for_status

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # the longest any one thing may take to show

# Skipped on a machine without it; never in CI, which installs it (.ci/run).
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs the system's Chromium: apt-get install -y chromium",
)


@asynccontextmanager
async def browser_page() -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh page of a headless Chromium, and the errors its scripts and console report."""
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 1000})
            page = await context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            yield page, errors
        finally:
            await browser.close()


async def request(conn: asyncpg.Connection, owner: uuid.UUID, name: str, **fields: object) -> uuid.UUID:
    """Inserts a row as its owner would; returns its id."""
    async with as_app_user(conn, owner):
        return await insert_model(conn, owner, model_name=name, **fields)  # type: ignore[arg-type]


async def test_a_person_signs_in_and_watches_the_generations(stack: Stack, tmp_path: Path) -> None:
    owners = [uuid.uuid4() for _ in range(3)]
    conn = await asyncpg.connect(stack.db_url)
    try:
        cancelled = await request(conn, owners[2], "Chess knight", prompt="a chess knight")
        async with as_app_user(conn, owners[2]):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", cancelled
            )
        async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
            done = [
                await request(conn, owners[0], "Wooden boat", prompt="a small wooden boat"),
                await request(conn, owners[1], "Ceramic teapot", prompt="a ceramic teapot"),
                await request(conn, owners[2], "Desk lamp", prompt="a desk lamp [fail]"),
                await request(conn, owners[0], "Untitled", prompt=""),
                await request(
                    conn,
                    owners[1],
                    "Cat photo",
                    generation_type="image_to_3d",
                    prompt=None,
                    source_image_url="someone-else/source-images/cat.png",
                ),
                await request(conn, owners[0], "Rubber duck", prompt="a rubber duck"),
            ]
            await wait_for_status(conn, done)
            async with browser_page() as (page, errors):
                await sees_the_window(page, stack, errors)
                crane = await sees_a_new_row_run(page, stack, conn, owners[0])
                await opens_details(page, crane)
                screenshot = await keeps_a_screenshot(page, tmp_path)
                html = await page.content()
    finally:
        await conn.close()
    assert screenshot.stat().st_size > 20_000
    assert [str(owner) for owner in owners if str(owner) in html] == []  # never a whole user id
    assert errors == [], errors


async def sees_the_window(page: Page, stack: Stack, errors: list[str]) -> None:
    """Signs in through the form and finds the rows, their reasons, the charts and the replica."""
    response = await page.goto(f"http://127.0.0.1:{stack.http_port}/dashboard")
    assert response is not None and response.status == 401
    await expect(page.get_by_role("table", name="Generations")).to_have_count(0)
    assert [error for error in errors if "401 (Unauthorized)" not in error] == []  # the form's own answer
    errors.clear()
    await page.get_by_label("Token").fill(DASHBOARD_TOKEN)
    await page.get_by_role("button", name="Sign in").click()

    rows = page.get_by_role("table", name="Generations").locator("tbody tr")
    await expect(rows).to_have_count(7, timeout=WAIT_MS)
    await expect(rows.first).to_contain_text("Rubber duck")  # newest first
    lamp = rows.filter(has_text="Desk lamp")
    await expect(lamp).to_contain_text("failed")
    await expect(lamp).to_contain_text(stack.simulator.config.failure_message)
    await expect(rows.filter(has_text="Untitled")).to_contain_text("The prompt is empty.")
    await expect(rows.filter(has_text="Cat photo")).to_contain_text("image → 3D")
    await expect(rows.filter(has_text="Wooden boat")).to_contain_text("completed")
    await expect(rows.filter(has_text="Chess knight")).to_contain_text("cancelled")
    await expect(page.get_by_label("Totals of the window")).to_contain_text("3completed")

    for caption in ("Completed and failed per hour", "Generation times", "Failures by reason", "Queue depth"):
        figure = page.locator("figure", has=page.locator("figcaption", has_text=caption))
        await expect(figure.get_by_role("img")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#chart-hourly svg rect.completed")).not_to_have_count(0)
    await expect(page.locator("#chart-durations figcaption")).to_contain_text("p95")
    await expect(page.locator("#chart-failures svg")).to_contain_text("The prompt is empty.")
    await expect(page.get_by_role("table", name="Replicas")).to_contain_text(
        "serving this page", timeout=WAIT_MS
    )

    only_failed = page.get_by_label("Status")
    await only_failed.select_option("failed")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await only_failed.select_option("")
    await expect(rows).to_have_count(7, timeout=WAIT_MS)


async def sees_a_new_row_run(
    page: Page, stack: Stack, conn: asyncpg.Connection, owner: uuid.UUID
) -> uuid.UUID:
    """A row requested while the page is open appears at the top, and its progress bar moves."""
    await page.evaluate("window.sameDocument = true")
    stack.simulator.config.duration_s = 30.0  # long enough to watch (it is stopped before its end)
    crane = await request(conn, owner, "Paper crane", prompt="a paper crane")
    row = page.locator(f'#generations tbody tr[data-id="{crane}"]')
    await expect(row).to_contain_text("Paper crane", timeout=WAIT_MS)
    await expect(row.locator("progress")).to_be_visible(timeout=WAIT_MS)
    first = int(await row.locator("progress").get_attribute("value") or 0)
    await page.wait_for_function(
        "([id, was]) => (document.querySelector(`tr[data-id='${id}'] progress`) || {}).value > was",
        arg=[str(crane), first],
        timeout=WAIT_MS,
    )
    replica = page.get_by_role("table", name="Replicas").locator("tbody tr", has_text="serving this page")
    await expect(replica.locator("td").nth(1)).to_have_text("1", timeout=WAIT_MS)  # the crane, in flight
    await expect(replica.locator("td").nth(2)).to_contain_text("ago")
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    return crane


async def opens_details(page: Page, crane: uuid.UUID) -> None:
    """A finished row's details show its task, attempts and files; a running one shows its lease."""
    rows = page.locator("#generations tbody tr")
    details = page.get_by_role("complementary")
    await rows.filter(has_text="Wooden boat").click()
    await expect(details).to_contain_text("AI task id", timeout=WAIT_MS)
    await expect(details).to_contain_text("Attempts")
    await expect(details).to_contain_text("/generated-models/")
    await expect(details.get_by_role("link", name="open").first).to_be_visible()
    await rows.filter(has_text="Desk lamp").click()
    await expect(details).to_contain_text("content filter", timeout=WAIT_MS)
    await page.locator(f'#generations tbody tr[data-id="{crane}"]').click()
    await expect(details).to_contain_text("Lease holder", timeout=WAIT_MS)
    await expect(details).to_contain_text("Lease ends in")
    await page.keyboard.press("Escape")
    await expect(details).to_be_hidden()


async def keeps_a_screenshot(page: Page, tmp_path: Path) -> Path:
    """The whole page as a PNG in the test's folder (and where LISTENER_DASHBOARD_SCREENSHOT says)."""
    path = tmp_path / "dashboard.png"
    await page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("LISTENER_DASHBOARD_SCREENSHOT")
    if wanted:
        Path(wanted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, wanted)
    return path
