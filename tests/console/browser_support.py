"""What the console's browser tests share (tests/console/conftest.py builds them): the server under test,
the watch on every request a page makes, and a tab with its helpers."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from processes import EaselProcess

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
