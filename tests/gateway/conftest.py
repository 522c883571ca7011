"""The gateway's test rig: a second real `easel serve` on loopback as the upstream (it speaks the OpenAI
Images API), a fake provider for the failure cases (fake_provider.py), and an Easel in front of them,
served over real HTTP with its gateway worker running, on SQLite and on PostgreSQL + S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_provider import FakeProvider
from gateway_rig import FAKE_KEY, Gateway, Upstream, gateway_catalog

from processes import easel_env, free_port, start_serve
from support import serve, write_catalog


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Upstream]:
    """A real `easel serve` (with its worker, SQLite, the tiny model) on a free loopback port."""
    base = tmp_path_factory.mktemp("upstream")
    catalog = write_catalog(base / "catalog.toml", tiny_model_dir)
    env = easel_env(data_dir=str(base / "data"), catalog=str(catalog), max_queued_per_project="0")
    proc, url = start_serve(env, base / "upstream.log")
    key = (base / "data" / "admin-key.txt").read_text().strip()
    try:
        yield Upstream(url, key, proc)
    finally:
        proc.stop()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with serve(provider.app) as url:
        provider.base_url = url
        yield provider


@pytest.fixture
def gateway(
    settings: Any,
    tmp_path: Path,
    tiny_model_dir: Path,
    upstream: Upstream,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Gateway]:
    """Easel in front of the providers, served over real HTTP; no local worker, its gateway worker on."""
    from easel.app import create_app
    from easel.runtime import Runtime

    monkeypatch.setenv("UPSTREAM_A_KEY", "key-of-the-stopped-upstream")
    monkeypatch.setenv("UPSTREAM_B_KEY", upstream.key)
    monkeypatch.setenv("FAKE_KEY", FAKE_KEY)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: upstream-a is "stopped"
    catalog = gateway_catalog(tmp_path / "gateway.toml", tiny_model_dir, upstream, fake, dead)
    gw_settings = settings.model_copy(
        update={"catalog": catalog, "fetch_allow_hosts": ["127.0.0.1"], "max_queued_per_project": 0}
    )
    runtime = Runtime.build(gw_settings)
    key, _ = runtime.keys.create(runtime.default_project_id, "admin", ["admin"], rate_limit_per_hour=0)
    try:
        app = create_app(runtime=runtime, with_worker=False)
        with serve(app) as url:
            yield Gateway(runtime, url, key, app)
    finally:
        runtime.close()
