"""Shared fixtures: isolated databases (SQLite and PostgreSQL), a tiny model, a runtime, an API client.

Every test that touches the store runs twice: on SQLite (a fresh file) and on PostgreSQL (a fresh
schema, dropped afterwards, in the server at EASEL_TEST_POSTGRES_URL, default the local one, or in a
throwaway server the session starts when nothing answers there: tests/pg_support.py). PostgreSQL is
required; set EASEL_TEST_SKIP_POSTGRES=1 only to skip it knowingly.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg_support import BACKENDS, fresh_database, start_postgres, stop_postgres
from s3_support import s3_settings, start_rgw, stop_rgw
from support import key_headers, write_catalog

# Tests run torch on one thread: deterministic timing, and no fight with other processes for cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _patient_httpx() -> None:
    """httpx's 5 s default is too short for synchronous generations on a loaded 2-core CI machine; tests
    that want a specific timeout still pass their own."""
    import functools

    import httpx

    for name in ("request", "get", "post", "put", "patch", "delete"):
        setattr(httpx, name, functools.partial(getattr(httpx, name), timeout=120))


_patient_httpx()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def rgw() -> Iterator[dict[str, str]]:
    """The running Ceph RGW's EASEL_S3_* settings (endpoint, region, credentials, addressing style);
    see tests/s3_support.py."""
    env, was_running = start_rgw()
    try:
        yield env
    finally:
        stop_rgw(was_running)


@pytest.fixture(scope="session")
def bucket(rgw: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh bucket for this session (the gateway may be shared with earlier runs)."""
    from easel.settings import Settings
    from easel.storage.factory import make_blob_store
    from easel.storage.s3 import S3BlobStore

    name = f"easel-test-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("s3"), storage_url=f"s3://{name}", **s3_settings(rgw)
    )
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    store.ensure_bucket()
    return name


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server of this session: EASEL_TEST_POSTGRES_URL (default the local server) when it
    answers, else a throwaway one started now and removed at the end (tests/pg_support.py)."""
    url, server = start_postgres()
    try:
        yield url
    finally:
        stop_postgres(server)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    pg_url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with fresh_database(request.param, tmp_path, pg_url) as url:
        yield url


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """The laptop setup (SQLite + a local folder) or the scale-out one (PostgreSQL + S3 on the real Ceph
    RGW, a fresh prefix per test): every test that uses the store runs on both."""
    from easel.settings import Settings

    storage: dict[str, object] = {}
    if database_url.startswith("postgresql") and os.environ.get("EASEL_TEST_SKIP_S3") != "1":
        rgw, bucket = request.getfixturevalue("rgw"), request.getfixturevalue("bucket")
        # Easel's own signed links (bytes proxied from S3), so link tests mean the same on both setups;
        # presigned S3 links have their own tests in tests/storage/test_s3.py.
        storage = {
            "storage_url": f"s3://{bucket}/{uuid.uuid4().hex[:12]}",
            "s3_presign": False,
            **s3_settings(rgw),
        }
    catalog = write_catalog(tmp_path / "catalog.toml", tiny_model_dir)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        catalog=catalog,
        lease_seconds=5,
        idle_check_seconds=0.5,
        secret_key="test-secret",
        **storage,
    )


@pytest.fixture
def runtime(settings):  # type: ignore[no-untyped-def]
    from easel.runtime import Runtime

    rt = Runtime.build(settings)
    yield rt
    rt.close()


@pytest.fixture
def admin_key(runtime) -> str:  # type: ignore[no-untyped-def]
    """An unlimited admin key of the local project."""
    plaintext, _ = runtime.keys.create(
        runtime.default_project_id, "test admin", ["admin"], rate_limit_per_hour=0
    )
    return plaintext


@pytest.fixture
def client(runtime, admin_key):  # type: ignore[no-untyped-def]
    """An API client (admin key) on an app with an in-process worker."""
    from fastapi.testclient import TestClient

    from easel.app import create_app

    with TestClient(create_app(runtime=runtime, with_worker=True), headers=key_headers(admin_key)) as c:
        yield c


@pytest.fixture
def api(runtime, admin_key):  # type: ignore[no-untyped-def]
    """An API client (admin key) with NO worker: jobs stay queued until a test runs one."""
    from fastapi.testclient import TestClient

    from easel.app import create_app

    with TestClient(create_app(runtime=runtime, with_worker=False), headers=key_headers(admin_key)) as c:
        yield c


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`), every test of the S3 gateway runs in one process: the process
    that started the gateway stops it when its session ends (tests/s3_support.py)."""
    for item in items:
        if "rgw" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("s3"))
