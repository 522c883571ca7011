"""Every model family through Easel's diffusers backend, with tiny random pipelines the tests build:
the arguments each family's pipeline gets, same seed -> same bytes, a batch = the same images as alone,
image-to-image and inpainting where the family has them, and stopping mid-way."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from easel.domain.catalog import Catalog
from easel.domain.families import Task
from easel.domain.spec import GenerationSpec
from easel.engine.backends.base import BatchRequest, ImageTask, Interrupted
from easel.engine.backends.diffusers import DiffusersBackend, call_arguments
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings, load_catalog
from tiny import BATCH_MAX_LEVELS, BATCH_MAX_SHARE, FAMILY_BUILDERS, tiny_entry

pytestmark = pytest.mark.slow

SIZE = 32
FAMILIES = list(FAMILY_BUILDERS)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("families")
    text = ""
    for family, build in FAMILY_BUILDERS.items():
        build(root / family)
        text += tiny_entry(family, family, family)
    text += tiny_entry("flux-true-cfg", "flux", "flux", "true_cfg_scale = 3.0\n")
    (root / "catalog.toml").write_text(text)
    return load_catalog(root / "catalog.toml")


@pytest.fixture(scope="module")
def backend() -> DiffusersBackend:
    return DiffusersBackend(Settings(device="cpu"), max_loaded=8)


def request(catalog: Catalog, model: str, **fields: object) -> BatchRequest:
    spec = GenerationSpec(prompt="a red circle", model=model, width=SIZE, height=SIZE, **fields)  # type: ignore[arg-type]
    resolved = spec.resolve(catalog, seed=3)
    source = Image.new("RGB", (SIZE, SIZE), (200, 40, 40))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    return build_batch(catalog, catalog.resolve(model), [BatchPart(resolved, source, mask)])


def run(backend: DiffusersBackend, req: BatchRequest, **changes: object) -> list[np.ndarray]:
    images = backend.generate(replace(req, **changes), lambda step, total: True)  # type: ignore[arg-type]
    assert all(im.size == (req.width, req.height) for im in images)
    return [np.asarray(im.convert("RGB"), dtype=np.int16) for im in images]


def test_the_tiny_pipelines_are_told_apart_by_their_files(catalog: Catalog) -> None:
    assert {n: m.family for n, m in catalog.models.items()} == {
        **{f: f for f in FAMILIES},
        "flux-true-cfg": "flux",
    }


@pytest.mark.parametrize(
    ("model", "present", "absent"),
    [
        ("sd", {"guidance_scale"}, {"max_sequence_length", "true_cfg_scale"}),
        ("sdxl", {"guidance_scale"}, {"max_sequence_length", "true_cfg_scale"}),
        ("sd3", {"guidance_scale", "max_sequence_length"}, {"true_cfg_scale"}),
        ("flux", {"guidance_scale", "max_sequence_length"}, {"negative_prompt", "true_cfg_scale"}),
        ("flux-schnell", {"max_sequence_length"}, {"guidance_scale", "negative_prompt", "true_cfg_scale"}),
        ("flux-true-cfg", {"negative_prompt", "true_cfg_scale", "guidance_scale"}, set()),
        ("pixart-sigma", {"guidance_scale", "max_sequence_length"}, {"true_cfg_scale"}),
    ],
)
def test_each_family_gets_the_arguments_its_pipeline_takes(
    catalog: Catalog, model: str, present: set[str], absent: set[str]
) -> None:
    kwargs = call_arguments(request(catalog, model), SIZE, SIZE)
    assert present <= set(kwargs) and not absent & set(kwargs)
    if "max_sequence_length" in kwargs:
        assert kwargs["max_sequence_length"] == 32  # the entry's, not the family's 256-512
    if model == "flux-true-cfg":  # true CFG runs for every job of the entry: "" when it has none
        assert (kwargs["negative_prompt"], kwargs["true_cfg_scale"]) == ([""], 3.0)


@pytest.mark.parametrize("model", FAMILIES)
def test_same_seed_same_pixels_and_a_batch_is_the_same_as_alone(
    catalog: Catalog, backend: DiffusersBackend, model: str
) -> None:
    req = request(catalog, model)
    first = run(backend, req)[0]
    assert np.array_equal(first, run(backend, req)[0])
    other_seed = [replace(req.items[0], seed=4)]
    assert not np.array_equal(first, run(backend, req, items=other_seed)[0])
    batch = [req.items[0], replace(req.items[0], prompt="a blue square", seed=9)]
    together = run(backend, req, items=batch)
    diff = np.abs(together[0] - first)
    assert diff.max() <= BATCH_MAX_LEVELS and (diff > 0).mean() <= BATCH_MAX_SHARE, (
        diff.max(),
        (diff > 0).mean(),
    )
    alone_second = run(backend, req, items=batch[1:])[0]
    assert np.abs(together[1] - alone_second).max() <= BATCH_MAX_LEVELS


@pytest.mark.parametrize("model", ["sd", "sdxl", "sd3", "pixart-sigma", "flux-true-cfg"])
def test_a_negative_prompt_reaches_the_pipeline(
    catalog: Catalog, backend: DiffusersBackend, model: str
) -> None:
    plain = run(backend, request(catalog, model))[0]
    negative = run(backend, request(catalog, model, negative_prompt="blue"))[0]
    assert not np.array_equal(plain, negative)


@pytest.mark.parametrize("model", ["sd", "sdxl", "sd3", "flux", "pixart-sigma"])
def test_guidance_reaches_the_pipeline(catalog: Catalog, backend: DiffusersBackend, model: str) -> None:
    low = run(backend, request(catalog, model, guidance=1.5))[0]
    high = run(backend, request(catalog, model, guidance=6.0))[0]
    assert not np.array_equal(low, high)


@pytest.mark.parametrize("model", ["sd", "sdxl", "sd3", "flux", "flux-schnell"])
@pytest.mark.parametrize("task", [Task.IMAGE_TO_IMAGE, Task.INPAINT])
def test_image_to_image_and_inpainting(
    catalog: Catalog, backend: DiffusersBackend, model: str, task: Task
) -> None:
    fields: dict[str, object] = {"task": task, "source_image_ids": ["s"], "strength": 0.8}
    if task is Task.INPAINT:
        fields["mask_image_id"] = "m"
    req = request(catalog, model, **fields)
    out = run(backend, req)[0]
    assert np.array_equal(out, run(backend, req)[0])  # deterministic too
    source = np.asarray(req.items[0].source, dtype=np.int16)
    if task is Task.INPAINT:
        outside = np.asarray(req.items[0].mask) < 128
        assert np.array_equal(out[outside], source[outside])  # only the masked area is repainted
        assert not np.array_equal(out[~outside], source[~outside])
    else:
        assert not np.array_equal(out, source)


@pytest.mark.parametrize("model", ["flux", "pixart-sigma"])
def test_a_batch_stops_when_its_step_callback_says_so(
    catalog: Catalog, backend: DiffusersBackend, model: str
) -> None:
    """FLUX has callback_on_step_end, PixArt-Σ only the older `callback`: both stop."""
    req = replace(request(catalog, model), steps=4)
    seen: list[tuple[int, int]] = []

    def on_step(step: int, total: int) -> bool:
        seen.append((step, total))
        return step < 2

    with pytest.raises(Interrupted):
        backend.generate(req, on_step)
    assert seen == [(1, 4), (2, 4)]


def test_items_are_images_in_order(catalog: Catalog, backend: DiffusersBackend) -> None:
    req = request(catalog, "sd")
    items = [ImageTask("a red circle", None, s) for s in (1, 2, 3)]
    out = run(backend, req, items=items)
    assert len(out) == 3 and not np.array_equal(out[0], out[1])
