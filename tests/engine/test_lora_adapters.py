"""LoRA adapters through Easel's diffusers backend, with tiny pipelines and tiny LoRAs the tests build
(tests/tiny.py): a LoRA changes the image, scale 0 is no LoRA, nothing leaks into the next batch, two
LoRAs are not either alone, the LRU unloads beyond `keep`, image-to-image with a LoRA, and a LoRA that
cannot be loaded is ModelUnavailable."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easel.domain.catalog import Catalog
from easel.domain.families import Task
from easel.domain.spec import GenerationSpec, LoraRef
from easel.engine.backends.base import Adapter, BatchRequest, ModelUnavailable
from easel.engine.backends.diffusers import DiffusersBackend
from easel.engine.backends.lora import Adapters, adapter_name
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings, load_catalog
from tiny import BATCH_MAX_LEVELS, BATCH_MAX_SHARE, FAMILY_BUILDERS, build_tiny_lora, tiny_entry

pytestmark = pytest.mark.slow

SIZE = 32
FAMILIES = ["sd", "sdxl", "sd3", "flux"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """A tiny pipeline of each family and a LoRA for each (`<family>-a`; SD a second one, `sd-b`), plus
    LoRAs whose weights are missing, not LoRA weights at all, or for another family."""
    root = tmp_path_factory.mktemp("loras")
    text = ""
    for family in FAMILIES:
        FAMILY_BUILDERS[family](root / family)
        text += tiny_entry(family, family, family, strength=0.7)
        for n, seed in (("a", 1), ("b", 2)) if family == "sd" else (("a", 1),):
            file = build_tiny_lora(root / family, root / f"lora-{family}-{n}", family, seed)
            # -a by its file, -b by its folder
            source = file.relative_to(root) if n == "a" else file.parent.relative_to(root)
            text += f'[loras.{family}-{n}]\nsource = "{source}"\nfamilies = ["{family}"]\n'
    (root / "garbage.safetensors").write_bytes(b"not a safetensors file")
    text += '[loras.missing]\nsource = "nowhere/missing.safetensors"\nfamilies = ["sd"]\n'
    text += '[loras.garbage]\nsource = "garbage.safetensors"\nfamilies = ["sd"]\n'
    # An SD LoRA declared for FLUX: its keys match no layer of the FLUX transformer.
    text += '[loras.misfiled]\nsource = "lora-sd-a"\nfamilies = ["flux"]\n'
    (root / "catalog.toml").write_text(text)
    return load_catalog(root / "catalog.toml")


@pytest.fixture(scope="module")
def backend() -> DiffusersBackend:
    return DiffusersBackend(Settings(device="cpu"), max_loaded=8)


def request(catalog: Catalog, model: str, *loras: tuple[str, float | None], **fields: object) -> BatchRequest:
    refs = [LoraRef(name=name, scale=scale) for name, scale in loras]
    spec = GenerationSpec(  # type: ignore[arg-type]
        prompt="a red circle", model=model, width=SIZE, height=SIZE, loras=refs, **fields
    )
    resolved = spec.resolve(catalog, seed=7)
    source = (
        Image.new("RGB", (SIZE, SIZE), (200, 40, 40)) if resolved.task is not Task.TEXT_TO_IMAGE else None
    )
    return build_batch(catalog, catalog.resolve(model), [BatchPart(resolved, source)])


def run(backend: DiffusersBackend, req: BatchRequest, **changes: object) -> np.ndarray:
    images = backend.generate(replace(req, **changes), lambda step, total: True)  # type: ignore[arg-type]
    assert [im.size for im in images] == [(SIZE, SIZE)] * len(req.items)
    return np.asarray(images[0].convert("RGB"), dtype=np.int16)


def about_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the rounding bound a batch of another size may show."""
    diff = np.abs(a - b).max(axis=-1)
    return int(diff.max()) <= BATCH_MAX_LEVELS and float((diff > 0).mean()) <= BATCH_MAX_SHARE


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Different beyond what rounding at another batch size could make."""
    return int(np.abs(a - b).max()) > 2 * BATCH_MAX_LEVELS


def pipe_of(backend: DiffusersBackend, req: BatchRequest) -> object:
    return backend.pipeline(req.source, req.model.options)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_changes_the_image_scale_zero_does_not_and_nothing_leaks(
    catalog: Catalog, backend: DiffusersBackend, family: str
) -> None:
    plain_request = request(catalog, family)
    before = run(backend, plain_request)  # before any LoRA was ever loaded into this pipeline
    a = run(backend, request(catalog, family, (f"{family}-a", 1.0)))
    assert differs(a, before)
    zero = run(backend, request(catalog, family, (f"{family}-a", 0.0)))
    assert np.array_equal(zero, before) or about_equal(zero, before)
    after = run(backend, plain_request)  # the next batch without a LoRA: no adapter leaks into it
    assert np.array_equal(after, before)
    assert backend.adapters.loaded(pipe_of(backend, plain_request)) == [f"{family}-a"]


def test_scales_and_two_loras_at_once(catalog: Catalog, backend: DiffusersBackend) -> None:
    before = run(backend, request(catalog, "sd"))
    a = run(backend, request(catalog, "sd", ("sd-a", 1.0)))
    half = run(backend, request(catalog, "sd", ("sd-a", 0.5)))
    assert differs(half, a) and differs(half, before)
    b = run(backend, request(catalog, "sd", ("sd-b", None)))  # the catalog's scale (1.0)
    both = run(backend, request(catalog, "sd", ("sd-a", 1.0), ("sd-b", 1.0)))
    assert differs(b, before) and differs(b, a)
    assert differs(both, a) and differs(both, b)
    assert np.array_equal(run(backend, request(catalog, "sd", ("sd-a", 1.0))), a)  # kept loaded: the same
    assert backend.adapters.loaded(pipe_of(backend, request(catalog, "sd"))) == ["sd-b", "sd-a"]
    assert np.array_equal(run(backend, request(catalog, "sd")), before)


def test_a_batch_with_a_lora_gives_each_image_as_alone(catalog: Catalog, backend: DiffusersBackend) -> None:
    spec = GenerationSpec(
        prompt="a red circle", model="sd", width=SIZE, height=SIZE, loras=[LoraRef(name="sd-a", scale=0.8)]
    )
    parts = [BatchPart(spec.resolve(catalog, seed=seed)) for seed in (1, 2)]
    together = build_batch(catalog, catalog.models["sd"], parts)
    assert together.loras == (Adapter("sd-a", together.loras[0].source, None, 0.8),)
    images = backend.generate(together, lambda step, total: True)
    for part, image in zip(parts, images, strict=True):
        alone = run(backend, build_batch(catalog, catalog.models["sd"], [part]))
        assert about_equal(np.asarray(image.convert("RGB"), dtype=np.int16), alone)


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_image_to_image_with_a_lora(catalog: Catalog, backend: DiffusersBackend, family: str) -> None:
    i2i = {"task": Task.IMAGE_TO_IMAGE, "source_image_ids": ["source"]}
    plain = request(catalog, family, **i2i)
    before = run(backend, plain)
    with_lora = run(backend, request(catalog, family, (f"{family}-a", 1.0), **i2i))
    assert differs(with_lora, before)
    assert np.array_equal(run(backend, plain), before)  # the derived pipeline shares the adapters' state


def test_the_lru_unloads_beyond_keep(catalog: Catalog) -> None:
    backend = DiffusersBackend(Settings(device="cpu"), max_loaded=1)
    backend.adapters = Adapters(keep=1)
    plain = request(catalog, "sd")
    before = run(backend, plain)
    pipe: object = pipe_of(backend, plain)
    run(backend, request(catalog, "sd", ("sd-a", 1.0)))
    run(backend, request(catalog, "sd", ("sd-b", 1.0)))
    assert backend.adapters.loaded(pipe) == ["sd-b"]
    names = {n for names in pipe.get_list_adapters().values() for n in names}  # type: ignore[attr-defined]
    assert names == {adapter_name(request(catalog, "sd", ("sd-b", 1.0)).loras[0])}
    both = request(catalog, "sd", ("sd-a", 1.0), ("sd-b", 1.0))
    run(backend, both)  # a batch's own adapters are never unloaded, even past `keep`
    assert backend.adapters.loaded(pipe) == ["sd-a", "sd-b"]  # least recently used first
    run(backend, request(catalog, "sd", ("sd-a", 0.5)))
    assert backend.adapters.loaded(pipe) == ["sd-a"]
    assert np.array_equal(run(backend, plain), before)


def test_adapter_names_are_stable_and_unique() -> None:
    one = Adapter("my.lora", "/loras/x.safetensors", None, 1.0)
    assert adapter_name(one) == adapter_name(replace(one, scale=0.3))  # the scale is not the adapter
    assert adapter_name(one).startswith("easel_my_lora_") and "." not in adapter_name(one)
    others = [
        replace(one, name="my_lora"),  # sanitises alike
        replace(one, source="/loras/y.safetensors"),  # the catalog points the name at other weights
        replace(one, weight_name="w.safetensors"),
    ]
    assert len({adapter_name(a) for a in [one, *others]}) == 4


class FakePipe:
    """What Adapters uses of a diffusers pipeline, counting loads."""

    def __init__(self) -> None:
        self.adapters: set[str] = set()
        self.loads = 0
        self.active: list[str] = []

    def load_lora_weights(self, source: str, adapter_name: str, **kwargs: object) -> None:
        self.loads += 1
        self.adapters.add(adapter_name)

    def get_list_adapters(self) -> dict[str, list[str]]:
        return {"unet": sorted(self.adapters)}

    def delete_adapters(self, names: str) -> None:
        self.adapters.discard(names)

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.active = names

    def enable_lora(self) -> None: ...

    def disable_lora(self) -> None:
        self.active = []


def test_adapters_are_tracked_per_live_pipeline(tmp_path: Path) -> None:
    """A pipeline dropped from the model cache takes its record with it: a new pipeline (which may get
    the old one's id()) never inherits it, and loads its adapters itself."""
    weights = tmp_path / "x.safetensors"
    weights.write_bytes(b"")
    adapter = Adapter("x", str(weights), None, 1.0)
    adapters = Adapters()
    for _ in range(3):
        pipe = FakePipe()
        adapters.apply(pipe, [adapter])
        adapters.apply(pipe, [adapter])
        assert (pipe.loads, pipe.active, adapters.loaded(pipe)) == (1, [adapter_name(adapter)], ["x"])
        adapters.apply(pipe, [])
        assert pipe.active == []
        del pipe
        gc.collect()
        assert len(adapters._loaded) == 0
    # An adapter unloaded behind the record's back is loaded again; one already present is adopted.
    pipe = FakePipe()
    adapters.apply(pipe, [adapter])
    pipe.adapters.clear()
    adapters.apply(pipe, [adapter])
    assert pipe.loads == 2
    fresh = Adapters()
    fresh.apply(pipe, [adapter])
    assert pipe.loads == 2 and fresh.loaded(pipe) == ["x"]
    # A pipeline without diffusers' LoRA loader (PixArt-Σ, a custom one) runs its batches untouched.
    fresh.apply(type("NoLoader", (), {})(), [])


@pytest.mark.parametrize(
    ("lora", "model", "words"),
    [
        ("missing", "sd", "no such file or folder"),
        ("garbage", "sd", "cannot be loaded"),
        ("misfiled", "flux", "cannot be loaded"),
    ],
)
def test_a_lora_that_cannot_be_loaded_is_model_unavailable(
    catalog: Catalog, backend: DiffusersBackend, lora: str, model: str, words: str
) -> None:
    before = run(backend, request(catalog, model))
    with pytest.raises(ModelUnavailable, match=f"LoRA '{lora}'.*{words}"):
        run(backend, request(catalog, model, (lora, 1.0)))
    assert np.array_equal(run(backend, request(catalog, model)), before)  # the pipeline still works
