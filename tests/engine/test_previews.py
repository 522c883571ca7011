"""Previews: the steps a job gets them at, every family's pipeline decoding its current estimate through
its own VAE without changing the final images, and the worker publishing each job's own previews."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_family_pipelines import FAMILIES, backend, catalog, request  # noqa: F401 - module fixtures

from easel.domain.catalog import Catalog
from easel.domain.spec import GenerationSpec
from easel.engine.backends.diffusers import DiffusersBackend
from easel.engine.previews import BatchPreviews, jpeg, preview_size, preview_steps
from easel.service.events import JobEvent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("n", "total", "steps"),
    [
        (3, 20, [5, 10, 15]),
        (3, 8, [2, 4, 6]),
        (1, 20, [10]),
        (3, 2, [1]),
        (2, 3, [1, 2]),
        (0, 20, []),
        (2, 1, []),
    ],
)
def test_preview_steps_spread_over_the_run_never_the_last(n: int, total: int, steps: list[int]) -> None:
    assert preview_steps(n, total) == steps


def test_preview_size_is_the_request_scaled_to_512_at_most() -> None:
    assert preview_size(256, 256) == (256, 256)
    assert preview_size(1024, 1024) == (512, 512)
    assert preview_size(1536, 1024) == (512, 341)
    assert preview_size(1024, 1792) == (293, 512)


@pytest.mark.parametrize("model", FAMILIES)
def test_every_family_previews_its_work_and_the_images_do_not_change(
    catalog: Catalog,  # noqa: F811
    backend: DiffusersBackend,  # noqa: F811
    model: str,
) -> None:
    req = replace(request(catalog, model), steps=6)
    req = replace(req, items=[req.items[0], replace(req.items[0], seed=4)])  # two images
    plain = backend.generate(req, lambda step, total: True)
    events: list[JobEvent] = []
    spec = GenerationSpec(prompt="x", width=req.width, height=req.height, previews=2)
    hook = BatchPreviews(
        {"a": spec, "b": spec.model_copy(update={"previews": 1})}, [("a", 0), ("b", 0)], events.append, None
    )
    with_previews = backend.generate(req, lambda step, total: True, hook)
    # Previews are a side effect: the images are exactly those of a call without them.
    assert [np.asarray(i).tobytes() for i in with_previews] == [np.asarray(i).tobytes() for i in plain]
    got = [(e.generation_id, e.data["step"], e.data["index"], e.data["count"]) for e in events]
    assert got == [("a", 2, 0, 2), ("b", 3, 0, 1), ("a", 4, 1, 2)]
    for e in events:
        assert e.kind == "preview" and e.data["image"].size == (req.width, req.height)
        assert (e.data["width"], e.data["height"]) == (req.width, req.height)
    first, last = (np.asarray(e.data["image"], dtype=np.int16) for e in (events[0], events[2]))
    assert not np.array_equal(first, last)  # the estimate changes as the steps go on


def test_a_preview_encodes_as_jpeg() -> None:
    data = jpeg(Image.new("RGB", (40, 30), (200, 10, 10)))
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (40, 30)


def test_the_worker_publishes_previews_of_the_jobs_that_asked(runtime: Any) -> None:
    published: list[JobEvent] = []
    worker = runtime.make_worker()
    worker.publish = published.append
    principal = runtime.principal()
    wants = runtime.generations.submit(
        principal, GenerationSpec(prompt="a", size="64x64", steps=8, previews=3, n=2)
    )
    plain = runtime.generations.submit(principal, GenerationSpec(prompt="b", size="64x64", steps=8))
    while worker.run_once():
        pass
    previews = [e for e in published if e.kind == "preview"]
    assert {e.generation_id for e in previews} == {wants.id}
    assert [(e.data["step"], e.data["index"], e.data["image_index"]) for e in previews] == [
        (2, 0, 0),
        (2, 0, 1),
        (4, 1, 0),
        (4, 1, 1),
        (6, 2, 0),
        (6, 2, 1),
    ]
    assert all(e.data["image"].size == (64, 64) for e in previews)
    done = {e.generation_id for e in published if e.kind == "finished"}
    assert done == {wants.id, plain.id}
    for gid in (wants.id, plain.id):
        assert runtime.generations.get(runtime.default_project_id, gid).status.value == "succeeded"
