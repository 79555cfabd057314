"""Fixtures for the console's browser tests: Debian's headless Chromium driven by Playwright, and
gateways with demo data (one shared read-only, one fresh per test that changes state)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from screening.protection import PersonalDataVault
from tests.conftest import bounded_cleanup
from tests.web.demo import Demo, seed, start_console_gateway

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

HAVE_CHROMIUM = CHROMIUM.exists()
SKIP_REASON = "Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
needs_chromium = pytest.mark.skipif(not HAVE_CHROMIUM, reason=SKIP_REASON)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(SKIP_REASON)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="session")
async def demo(pool: asyncpg.Pool[Any], vault: PersonalDataVault) -> AsyncIterator[Demo]:
    """A gateway with two weeks of demo data, shared by the tests that only read."""
    root = Path(tempfile.mkdtemp(prefix="screening-web-"))
    gw, runner = await start_console_gateway(root, pool, vault)
    try:
        d = await seed(gw)
        d.runner = runner
        yield d
    finally:
        await gw.http.close()
        await bounded_cleanup(runner)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def fresh(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[Demo]:
    """A gateway of its own with a little data, for tests that review, alert or sign out."""
    gw, runner = await start_console_gateway(tmp_path, pool, vault)
    try:
        d = await seed(gw, days=2, per_day=3, scans_per_day=1, flagged=2)
        d.runner = runner
        yield d
    finally:
        await gw.http.close()
        await bounded_cleanup(runner)


OpenConsole = Callable[..., Awaitable[Any]]


@pytest.fixture
async def open_console(browser: Any) -> AsyncIterator[OpenConsole]:
    """``await open_console(url, key)``: a signed-in page, its context closed after the test
    (an open page holds the alerts stream, which would delay the gateway's shutdown)."""
    pages: list[Any] = []

    async def open_(url: str, key: str, lang: str = "zh-CN", timezone_id: str | None = None) -> Any:
        page = await signed_in_page(browser, url, key, lang, timezone_id)
        pages.append(page)
        return page

    try:
        yield open_
    finally:
        for page in pages:
            await page.context.close()


async def signed_in_page(
    browser: Any, url: str, key: str, lang: str = "zh-CN", timezone_id: str | None = None
) -> Any:
    """A new browser context signed in through the console's own form (in the browser's time
    zone `timezone_id`, default the machine's)."""
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the console's CSP
    # (script-src 'self') forbids; test_session checks the CSP header itself.
    context = await browser.new_context(
        viewport={"width": 1360, "height": 900},
        locale=lang,
        bypass_csp=True,
        **({"timezone_id": timezone_id} if timezone_id else {}),
    )
    await context.add_init_script(
        f"localStorage.getItem('console.lang') || localStorage.setItem('console.lang', '{lang}')"
    )
    page = await context.new_page()
    await page.goto(f"{url}/console/")
    await page.fill("#api-key", key)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("main[data-ready]")
    return page
