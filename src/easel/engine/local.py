"""Generation without a server or database: the engine run in-process (`easel generate`)."""

from __future__ import annotations

from easel.domain.errors import ValidationFailed
from easel.domain.families import Task
from easel.domain.spec import GenerationSpec, image_seeds
from easel.engine.backends import check_catalog, make_backend
from easel.engine.backends.base import StepCallback
from easel.engine.batch import BatchPart, build_batch
from easel.imaging import encode, generation_params
from easel.service.generations import draw_seed
from easel.settings import Settings


def generate_images(
    settings: Settings, spec: GenerationSpec, on_step: StepCallback, *, as_a_worker: bool = False
) -> tuple[GenerationSpec, list[tuple[int, bytes]]]:
    """Resolve `spec` against the catalog, run it, return the resolved spec and (seed, encoded bytes).
    `as_a_worker`: encode the files as a worker does, the generation parameters recorded when the spec
    asks for them (`easel replay`: the same bytes as the receipt's); else without them (`easel
    generate`: the same picture makes the same bytes whatever the model's name in the catalog)."""
    if spec.task is not Task.TEXT_TO_IMAGE:
        raise ValidationFailed.for_field("task", "only text-to-image runs without a server")
    catalog = settings.load_catalog()
    check_catalog(catalog)
    seed = spec.seed if spec.seed is not None else draw_seed()
    resolved = spec.resolve(catalog, seed=seed)
    entry = catalog.resolve(resolved.model)
    assert resolved.seed is not None and resolved.width and resolved.height and resolved.steps
    request = build_batch(catalog, entry, [BatchPart(resolved)])
    images = make_backend(entry.backend, settings).generate(request, on_step)
    seeds = image_seeds(resolved)
    record = as_a_worker and resolved.record_parameters
    encoded = [
        encode(
            im,
            resolved.output_format,
            resolved.output_compression,
            generation_params(resolved, seed) if record else None,
            label=resolved.provenance_label,
        ).data
        for im, seed in zip(images, seeds, strict=True)
    ]
    return resolved, list(zip(seeds, encoded, strict=True))
