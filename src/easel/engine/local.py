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
    settings: Settings, spec: GenerationSpec, on_step: StepCallback
) -> tuple[GenerationSpec, list[tuple[int, bytes]]]:
    """Resolve `spec` against the catalog, run it, return the resolved spec and (seed, encoded bytes)."""
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
    encoded = [  # as a worker encodes them (engine/worker.py), so a receipt replays to the same bytes
        encode(
            im,
            resolved.output_format,
            resolved.output_compression,
            generation_params(resolved, seed) if resolved.record_parameters else None,
            label=resolved.provenance_label,
        ).data
        for im, seed in zip(images, seeds, strict=True)
    ]
    return resolved, list(zip(seeds, encoded, strict=True))
