"""The web console in a real browser: the system's Chromium driven by Playwright (headless), against a real
`easel serve` with the built-in model. Every page a test opens is watched: a request to any address other
than the Easel server, or an uncaught script error, fails the test.

Screenshots land in a temporary folder, or in EASEL_CONSOLE_SCREENSHOTS (`make screenshots` writes
docs/console/)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from processes import EaselProcess, easel_env, start_serve

pytestmark = pytest.mark.xdist_group("console")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The system's Chromium (Debian's package; scripts/setup.sh installs it), or EASEL_CHROMIUM."""
    found = os.environ.get("EASEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the console tests need Chromium: `make setup` installs it (apt-get install chromium)")
    return found


@dataclass
class Server:
    url: str
    key: str  # the first-start admin key (unlimited rate)
    proc: EaselProcess

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", self.auth)
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kw)

    def create_key(self, name: str, scopes: list[str]) -> tuple[str, str]:
        r = self.api(
            "POST", "/api/v1/admin/keys", json={"name": name, "scopes": scopes, "rateLimitPerHour": 0}
        )
        assert r.status_code == 201, r.text
        return r.json()["data"]["key"], r.json()["data"]["id"]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`easel serve` on its embedded defaults (SQLite, a data folder, the built-in model) and its worker."""
    tmp = tmp_path_factory.mktemp("console-serve")
    proc, url = start_serve(easel_env(data_dir=str(tmp / "data")), tmp / "serve.log")
    try:
        yield Server(url, (tmp / "data" / "admin-key.txt").read_text().strip(), proc)
    finally:
        proc.stop(60)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
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


@dataclass
class Watch:
    """What a page did that it must not: requests elsewhere, uncaught errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def request(self, url: str) -> None:
        self.requests.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)


class Console:
    """A browser tab on the console, with the helpers the tests share."""

    def __init__(self, page: Any, server: Server, watch: Watch) -> None:
        self.page, self.server, self.watch = page, server, watch

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.server.url}{path}")

    def sign_in(self, key: str | None = None, *, landing: str = "body[data-loaded=true]") -> None:
        self.goto("/console/signin")
        self.page.fill("#key", key or self.server.key)
        self.page.click("#signin-form button[type=submit]")
        self.page.wait_for_selector(landing)

    def loaded(self, path: str) -> None:
        self.goto(path)
        self.page.wait_for_selector("body[data-loaded=true]")


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
