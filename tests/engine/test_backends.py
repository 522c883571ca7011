"""Backends by name: the registry, the start-up catalog check, a second backend through the worker, and
the one BatchRequest builder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from PIL.Image import Image as PILImage

from easel.domain.catalog import Catalog
from easel.domain.generation import Status
from easel.domain.spec import MAX_SEED, GenerationSpec, image_seeds
from easel.engine import backends
from easel.engine.backends import backend_names, check_catalog, make_backend, register_backend
from easel.engine.backends.base import BatchRequest, StepCallback
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings

FAKE_CATALOG = """
default_model = "fake"

[models.fake]
backend = "fake"
source = "upstream/fake-model"
min_size = 32
max_size = 256
max_n = 4

[models.fake.defaults]
steps = 3
guidance = 2.5
"""


class FakeBackend:
    """Solid grey images at the requested size, a step callback per step; remembers what it was asked."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests: list[BatchRequest] = []

    def generate(self, request: BatchRequest, on_step: StepCallback) -> list[PILImage]:
        self.requests.append(request)
        for step in range(1, request.steps + 1):
            on_step(step, request.steps)
        return [
            Image.new("RGB", (request.width, request.height), (i * 40, 128, 128))
            for i in range(len(request.items))
        ]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the registry: backends registered by a test are gone after it."""
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_shipped_backends_and_catalog() -> None:
    assert backend_names() == ["diffusers"]
    check_catalog(Settings().load_catalog())  # every shipped entry names a known backend


def test_unknown_backend_fails_at_start_naming_the_entry(tmp_path: Path) -> None:
    from easel.runtime import Runtime

    path = write(
        tmp_path / "c.toml", '[models.ok]\nsource = "x"\n[models.foo]\nsource = "x"\nbackend = "difusers"\n'
    )
    message = "catalog entry 'foo': unknown backend 'difusers'; known: diffusers"
    with pytest.raises(ValueError, match=message):
        Runtime.build(Settings(data_dir=tmp_path / "data", catalog=path, secret_key="s"))
    assert not (tmp_path / "data" / "easel.db").exists()  # failed before the database was touched


def test_make_backend_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'; known: diffusers"):
        make_backend("nope", Settings())


def test_a_name_is_registered_once(registry: None) -> None:
    register_backend("fake", FakeBackend)
    assert backend_names() == ["diffusers", "fake"]
    with pytest.raises(ValueError, match="already registered"):
        register_backend("fake", FakeBackend)
    with pytest.raises(ValueError, match="already registered"):
        register_backend("diffusers", FakeBackend)


def test_a_registered_backend_serves_a_catalog_entry_through_the_worker(
    registry: None, tmp_path: Path, database_url: str
) -> None:
    from easel.runtime import Runtime

    built: list[FakeBackend] = []

    def factory(settings: Settings) -> FakeBackend:
        built.append(FakeBackend(settings))
        return built[-1]

    path = write(tmp_path / "fake.toml", FAKE_CATALOG)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, catalog=path, secret_key="s", lease_seconds=5
    )
    with pytest.raises(ValueError, match="catalog entry 'fake': unknown backend 'fake'"):
        Runtime.build(settings)
    register_backend("fake", factory)
    runtime = Runtime.build(settings)
    try:
        pid = runtime.default_project_id
        spec = GenerationSpec(prompt="a cat", size="64x64", n=2, seed=MAX_SEED)
        gen = runtime.generations.submit(runtime.principal(pid), spec)
        worker = runtime.make_worker()
        assert worker.run_once()
        final = runtime.repo.get_generation(pid, gen.id)
        assert final.status is Status.SUCCEEDED, final.error_message
        assert [(im.index, im.seed, im.width, im.height) for im in final.images] == [
            (0, MAX_SEED, 64, 64),
            (1, 0, 64, 64),
        ]
        (fake,) = built  # built once, lazily, from the worker's settings
        assert fake.settings is runtime.settings
        (request,) = fake.requests
        assert request.source == "upstream/fake-model"  # no such folder: a hub id, handed on as is
        assert (request.steps, request.guidance) == (3, 2.5)
        assert [(t.prompt, t.seed) for t in request.items] == [("a cat", MAX_SEED), ("a cat", 0)]
        assert worker.backend(runtime.catalog.resolve("fake")) is fake
    finally:
        runtime.close()


def test_the_registry_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import easel.runtime\n"
        "from easel.engine.backends import backend_names, check_catalog\n"
        "from easel.settings import Settings\n"
        "check_catalog(Settings().load_catalog())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_build_batch_seeds_and_defaults() -> None:
    catalog = Catalog.parse(FAKE_CATALOG, base_dir="/nowhere")
    entry = catalog.resolve("fake")
    first = GenerationSpec(prompt="a", seed=MAX_SEED - 1, n=3, width=64, height=96, steps=7, guidance=0.0)
    second = GenerationSpec(prompt="b", negative_prompt="c", seed=9, width=64, height=96, steps=7)
    source, mask = Image.new("RGB", (8, 8)), Image.new("L", (8, 8))
    assert image_seeds(first) == [MAX_SEED - 1, MAX_SEED, 0]
    request = build_batch(catalog, entry, [BatchPart(first), BatchPart(second, source, mask)])
    # a hub id stays a hub id (no such folder next to the catalog)
    assert request.source == "upstream/fake-model"
    assert (request.width, request.height, request.steps) == (64, 96, 7)
    assert request.loras == ()
    assert request.guidance == 0.0  # an explicit 0 stays 0
    assert [(t.prompt, t.negative_prompt, t.seed) for t in request.items] == [
        ("a", None, MAX_SEED - 1),
        ("a", None, MAX_SEED),
        ("a", None, 0),
        ("b", "c", 9),
    ]
    assert request.items[3].source is source and request.items[3].mask is mask
    assert request.items[0].source is None
    bare = build_batch(catalog, entry, [BatchPart(GenerationSpec(prompt="x"))])  # unset: the entry's defaults
    assert (bare.width, bare.height, bare.steps, bare.guidance) == (32, 32, 3, 2.5)
    with pytest.raises(ValueError, match="at least one"):
        build_batch(catalog, entry, [])
