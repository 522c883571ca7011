"""Shared fixtures: isolated databases (SQLite and PostgreSQL), a tiny model, a runtime, an API client.

Every test that touches the store runs twice: on SQLite (a fresh file) and on PostgreSQL (a fresh
schema in the local server, dropped afterwards). PostgreSQL is required: set
EASEL_TEST_POSTGRES_URL to point elsewhere; set EASEL_TEST_SKIP_POSTGRES=1 only to skip it knowingly.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Tests run torch on one thread: deterministic timing, and no fight with other processes for cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PG_URL = os.environ.get("EASEL_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
SKIP_PG = os.environ.get("EASEL_TEST_SKIP_POSTGRES") == "1"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


def write_catalog(path: Path, model_dir: Path) -> Path:
    """A catalog: the tiny model as default (`tiny`, aliases `dall-e-2`) and a restricted `tiny-square`."""
    path.write_text(f'''
default_model = "tiny"

[models.tiny]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image", "inpaint", "variation"]
min_size = 32
max_size = 512
max_n = 4
max_prompt_length = 200
credits_per_image = 2
aliases = ["dall-e-2", "tiny-alias"]

[models.tiny.defaults]
steps = 4
guidance = 4.0
image_size = "thumbnail"

[models.tiny-square]
source = "{model_dir}"
aspect_ratios = ["1:1"]
max_size = 128
max_n = 1
credits_per_image = 0.5

[models.tiny-square.defaults]
steps = 2
guidance = 1.0

# Vendor dialects' models (api/pictory, api/placewise) and styles, all on the tiny model.
[styles.photorealistic]
prompt_suffix = "photo"
negative_prompt = "cartoon"
guidance = 5.0

[styles.cartoon]
prompt_suffix = "cartoon"

[styles.artistic]
[styles.minimalist]
[styles.vintage]
[styles.futuristic]

[models."seedream3.0"]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 2
styles = ["photorealistic", "artistic", "cartoon", "minimalist", "vintage", "futuristic"]
defaults = {{ steps = 2, guidance = 4.0, strength = 0.75 }}

[models.flux-schnell]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 0.6
styles = ["photorealistic", "artistic", "cartoon", "minimalist", "vintage", "futuristic"]
defaults = {{ steps = 1 }}

[models.nanobanana]
source = "{model_dir}"
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 4
defaults = {{ steps = 2 }}

[models.nanobanana-pro]
source = "{model_dir}"
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 14
defaults = {{ steps = 2 }}

[models.placewise-small]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 1
styles = []
defaults = {{ steps = 1, guidance = 4.0 }}

[models.placewise-medium]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 2
styles = []
defaults = {{ steps = 2, guidance = 4.0 }}

[models.placewise-large]
source = "{model_dir}"
aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
min_size = 32
native_size = 32
credits_per_image = 4
styles = ["photorealistic"]
defaults = {{ steps = 2, guidance = 4.0 }}
''')
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'easel.db'}"
        return
    if SKIP_PG:
        pytest.skip("EASEL_TEST_SKIP_POSTGRES=1")
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from easel.settings import Settings

    catalog = write_catalog(tmp_path / "catalog.toml", tiny_model_dir)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        catalog=catalog,
        lease_seconds=5,
        idle_check_seconds=0.5,
        secret_key="test-secret",
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
    plaintext, _ = runtime.keys.create(runtime.default_project_id, "test admin", ["admin"], rate_limit_per_hour=0)
    return plaintext


def key_headers(key: str) -> dict[str, str]:
    """The key in every dialect's header form (Bearer, X-API-Key, X-Client-Authorization)."""
    return {"Authorization": f"Bearer {key}", "X-API-Key": key, "X-Client-Authorization": key}


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
