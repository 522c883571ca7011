"""Real `easel serve` processes for the client's tests (tests/processes.py starts them): one with its
in-process worker and the tiny model, one API-only (no worker: jobs stay pending, for cancel, deadlines,
waits that time out and the queue cap)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from processes import EaselProcess, easel_env, start_api, start_serve
from support import write_catalog


@dataclass(frozen=True)
class Server:
    url: str
    key: str  # the first-start admin key (unlimited rate)
    proc: EaselProcess

    def create_key(self, **fields: object) -> str:
        """A new key of the local project (admin API), e.g. with `maxQueued`."""
        r = httpx.post(
            f"{self.url}/api/v1/admin/keys",
            json={"name": "client test", **fields},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["data"]["key"])


def _serve(tmp: Path, tiny_model_dir: Path, api_only: bool) -> Iterator[Server]:
    catalog = write_catalog(tmp / "catalog.toml", tiny_model_dir)
    env = easel_env(catalog=str(catalog), data_dir=str(tmp / "data"))
    start = start_api if api_only else start_serve
    proc, url = start(env, tmp / "serve.log")
    try:
        key = (tmp / "data" / "admin-key.txt").read_text().strip()
        yield Server(url, key, proc)
    finally:
        proc.stop(60)


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`easel serve` with its worker and the tiny model (4 steps by default)."""
    yield from _serve(tmp_path_factory.mktemp("client-serve"), tiny_model_dir, api_only=False)


@pytest.fixture(scope="session")
def idle_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`easel serve --no-worker`: nothing runs, so jobs stay pending."""
    yield from _serve(tmp_path_factory.mktemp("client-idle"), tiny_model_dir, api_only=True)
