"""One BatchRequest from resolved generations: the one builder the worker and `easel generate` share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL.Image import Image as PILImage

from easel.domain.catalog import ModelEntry
from easel.domain.spec import MAX_SEED, GenerationSpec
from easel.engine.backends.base import BatchRequest, ImageTask


def image_seeds(spec: GenerationSpec) -> list[int]:
    """The seeds of a generation's images: image i uses seed + i (mod 2^32)."""
    return [((spec.seed or 0) + i) % (MAX_SEED + 1) for i in range(spec.n)]


@dataclass(frozen=True)
class BatchPart:
    """One resolved generation of a batch, with its source and mask images once loaded (tasks other
    than text-to-image)."""

    spec: GenerationSpec
    source: PILImage | None = None
    mask: PILImage | None = None


def build_batch(entry: ModelEntry, source: str, parts: Sequence[BatchPart]) -> BatchRequest:
    """One pipeline call for compatible generations (equal batch keys): the first one's task, size and
    sampler settings (the entry's defaults where unset), and every image of every part, in order.
    `source` is the model's resolved path or hub id (engine/sources.py)."""
    if not parts:
        raise ValueError("a batch needs at least one generation")
    spec = parts[0].spec
    items = [
        ImageTask(p.spec.prompt, p.spec.negative_prompt, seed, p.source, p.mask)
        for p in parts
        for seed in image_seeds(p.spec)
    ]
    return BatchRequest(
        model=entry,
        source=source,
        task=spec.task,
        width=spec.width or entry.min_size,
        height=spec.height or entry.min_size,
        steps=spec.steps or entry.defaults.steps,
        guidance=spec.guidance if spec.guidance is not None else entry.defaults.guidance,
        strength=spec.strength,
        items=items,
    )
