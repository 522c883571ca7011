"""Generation without a server or database: the engine run in-process (`easel generate`)."""

from __future__ import annotations

from easel.domain.catalog import Catalog, Task
from easel.domain.errors import ValidationFailed
from easel.domain.spec import MAX_SEED, GenerationSpec
from easel.engine.backends import make_backend
from easel.engine.backends.base import BatchRequest, ImageTask, StepCallback
from easel.imaging import encode
from easel.settings import Settings


def generate_images(
    settings: Settings, spec: GenerationSpec, on_step: StepCallback
) -> tuple[GenerationSpec, list[tuple[int, bytes]]]:
    """Resolve `spec` against the catalog, run it, return the resolved spec and (seed, encoded bytes)."""
    if spec.task is not Task.TEXT_TO_IMAGE:
        raise ValidationFailed.for_field("task", "only text-to-image runs without a server")
    catalog = Catalog.load(settings.catalog)
    resolved = spec.resolve(catalog)
    entry = catalog.resolve(resolved.model)
    assert resolved.seed is not None and resolved.width and resolved.height and resolved.steps
    seeds = [(resolved.seed + i) % (MAX_SEED + 1) for i in range(resolved.n)]
    request = BatchRequest(
        model=entry,
        source=catalog.source_path(entry),
        task=resolved.task,
        width=resolved.width,
        height=resolved.height,
        steps=resolved.steps,
        guidance=resolved.guidance or 0.0,
        strength=resolved.strength,
        items=[ImageTask(resolved.prompt, resolved.negative_prompt, s) for s in seeds],
    )
    images = make_backend(entry.backend, settings.device).generate(request, on_step)
    encoded = [encode(im, resolved.output_format, resolved.output_compression).data for im in images]
    return resolved, list(zip(seeds, encoded, strict=True))
