"""One BatchRequest from resolved generations: the one builder the worker and `easel generate` share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL.Image import Image as PILImage

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.spec import GenerationSpec, image_seeds
from easel.engine.backends.base import Adapter, BatchRequest, ImageTask
from easel.engine.sources import model_source, resolve_source, resolved_entry


@dataclass(frozen=True)
class BatchPart:
    """One resolved generation of a batch, with its source and mask images once loaded (tasks other
    than text-to-image)."""

    spec: GenerationSpec
    source: PILImage | None = None
    mask: PILImage | None = None


def adapters(catalog: Catalog, spec: GenerationSpec) -> tuple[Adapter, ...]:
    """The LoRA adapters of a resolved spec, with their weights' resolved locations."""
    found = []
    for ref in spec.loras:
        lora = catalog.loras[ref.name]
        scale = lora.scale if ref.scale is None else ref.scale
        found.append(Adapter(lora.name, resolve_source(catalog, lora.source), lora.weight_name, scale))
    return tuple(found)


def build_batch(catalog: Catalog, entry: ModelEntry, parts: Sequence[BatchPart]) -> BatchRequest:
    """One pipeline call for compatible generations (equal batch keys): the first one's task, size,
    sampler settings (the entry's defaults where unset) and LoRAs, and every image of every part, in
    order. The model's and the adapters' sources, and the paths in the model's options, are resolved
    against the catalog (engine/sources.py)."""
    if not parts:
        raise ValueError("a batch needs at least one generation")
    spec = parts[0].spec
    items = [
        ImageTask(p.spec.prompt, p.spec.negative_prompt, seed, p.source, p.mask)
        for p in parts
        for seed in image_seeds(p.spec)
    ]
    return BatchRequest(
        model=resolved_entry(catalog, entry),
        source=model_source(catalog, entry),
        task=spec.task,
        width=spec.width or entry.min_size,
        height=spec.height or entry.min_size,
        steps=spec.steps or entry.defaults.steps,
        guidance=spec.guidance if spec.guidance is not None else entry.defaults.guidance,
        strength=spec.strength,
        items=items,
        loras=adapters(catalog, spec),
    )
