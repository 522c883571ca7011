"""The web console in a real browser: the system's Chromium driven by Playwright (headless), against a real
`easel serve` with the built-in model. Every page a test opens is watched: a request to any address other
than the Easel server, or an uncaught script error, fails the test.

Screenshots land in a temporary folder, or in EASEL_CONSOLE_SCREENSHOTS (`make screenshots` writes
docs/console/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM_ARGS, Console, Server, Watch, chromium_path

from processes import easel_env, start_serve

pytestmark = pytest.mark.xdist_group("console")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`easel serve` on its embedded defaults (SQLite, a data folder, the built-in model) and its worker."""
    tmp = tmp_path_factory.mktemp("console-serve")
    proc, url = start_serve(easel_env(data_dir=str(tmp / "data")), tmp / "serve.log")
    try:
        yield Server(url, (tmp / "data" / "admin-key.txt").read_text().strip(), proc)
    finally:
        proc.stop(60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while it is open,
    and tests of other modules that run in the same process call asyncio.run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("EASEL_CONSOLE_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _console(browser: Any, server: Server, viewport: dict[str, int]) -> Iterator[Console]:
    watch = Watch(server.url)
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.on("request", lambda req: watch.request(req.url))
    page = context.new_page()
    page.on("pageerror", lambda err: watch.errors.append(str(err)))
    page.set_default_timeout(30_000)
    try:
        yield Console(page, server, watch)
        assert watch.errors == [], f"script errors on the page: {watch.errors}"
        assert watch.foreign == [], f"the console reached other addresses: {watch.foreign}"
        assert watch.requests, "the page made no request at all"
    finally:
        context.close()


@pytest.fixture
def console(browser: Any, server: Server) -> Iterator[Console]:
    """A 1280 px wide tab."""
    yield from _console(browser, server, {"width": 1280, "height": 900})


@pytest.fixture
def phone(browser: Any, server: Server) -> Iterator[Console]:
    """A 390 px wide tab (a phone)."""
    yield from _console(browser, server, {"width": 390, "height": 844})
