"""Wire models of the Placewise ML dialect and their translation to and from the canonical model.

The request arrives as multipart/form-data (every value a string: "2", "false") or as JSON; both are
read into one model. Model tiers small/medium/large are the catalog entries placewise-small/-medium/
-large. `creativity` becomes guidance (medium and large only), `photorealistic` the catalog style
"photorealistic" (large only); both are recorded in `meta` whatever the tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field

from easel.api.wire import FormLoras, LoraWire, StrictWire, iso
from easel.domain.catalog import Catalog
from easel.domain.errors import ValidationFailed
from easel.domain.families import Guidance
from easel.domain.generation import Generation, Status
from easel.domain.spec import MAX_SEED, GenerationSpec

SLUG_HEADER = "X-Loyalty-Club-Slug"
ModelType = Literal["small", "medium", "large"]
AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "16:9", "9:16"]
ImageSize = Literal["thumbnail", "small", "medium", "large"]

MODEL_OF: dict[str, str] = {
    "small": "placewise-small",
    "medium": "placewise-medium",
    "large": "placewise-large",
}
TIER_OF: dict[str, str] = {v: k for k, v in MODEL_OF.items()}
# The document's warning: "for model size small, image size must be thumbnail or medium".
SMALL_MODEL_SIZES = ("thumbnail", "medium")
CREATIVITY_MIN, CREATIVITY_MAX, CREATIVITY_DEFAULT = 0, 5, 2
PHOTOREALISTIC_STYLE = "photorealistic"

STATUS_NAMES: dict[Status, str] = {
    Status.QUEUED: "pending",
    Status.RUNNING: "processing",
    Status.SUCCEEDED: "completed",
    Status.FAILED: "failed",
    Status.CANCELED: "canceled",
}

WIRE_NAMES = {
    "model": "model_type",
    "seed": "random_seed",
    "guidance": "creativity",
    "style": "photorealistic",
}


def creativity_guidance(creativity: int, default_guidance: float) -> float:
    """More creativity, less guidance: 2 (the default) keeps the model's guidance, each step up or down
    moves it by a quarter of that (0 -> 1.5x, 5 -> 0.25x)."""
    return round(default_guidance * (1.5 - 0.25 * creativity), 4)


class GenerateImageRequest(StrictWire):
    """POST /v1/ml/general/generate_image, in the document's field order. Lax types: the same model reads
    multipart/form-data bodies, where every value is a string ("2", "false"), and JSON bodies."""

    model_config = ConfigDict(strict=False)

    prompt: str = Field(min_length=1)
    model_type: ModelType = "small"
    aspect_ratio: AspectRatio = "1:1"
    image_size: ImageSize = "thumbnail"
    creativity: int = Field(CREATIVITY_DEFAULT, ge=CREATIVITY_MIN, le=CREATIVITY_MAX)
    photorealistic: bool = False
    random_seed: int | None = Field(None, ge=0, le=MAX_SEED)
    # Easel extension (not in Placewise's document): [{"name": ..., "scale": ...}], LoRAs of the
    # catalog; in a form body, that JSON array as the text of the field.
    loras: FormLoras | None = None

    def to_spec(self, catalog: Catalog, slug: str) -> GenerationSpec:
        if self.model_type == "small" and self.image_size not in SMALL_MODEL_SIZES:
            raise ValidationFailed.for_field(
                "image_size", f"for model_type small, image_size must be {' or '.join(SMALL_MODEL_SIZES)}"
            )
        model = MODEL_OF[self.model_type]
        guidance = None
        entry = catalog.resolve(model)
        # Creativity moves the guidance scale: nothing to move on a model without one (FLUX.1 [schnell]).
        if self.model_type in ("medium", "large") and entry.guidance_kind is not Guidance.NONE:
            guidance = creativity_guidance(self.creativity, entry.defaults.guidance)
        style = PHOTOREALISTIC_STYLE if self.model_type == "large" and self.photorealistic else None
        return GenerationSpec(
            prompt=self.prompt,
            model=model,
            aspect_ratio=self.aspect_ratio,
            image_size=self.image_size,
            seed=self.random_seed,
            guidance=guidance,
            style=style,
            loras=LoraWire.refs(self.loras),
            meta={
                "loyaltyClubSlug": slug,
                "placewise": {
                    "image_size": self.image_size,
                    "creativity": self.creativity,
                    "photorealistic": self.photorealistic,
                },
            },
        )


def created_json(number: int) -> dict[str, Any]:
    return {"image_generation_task": {"id": number}}


def task_json(number: int, gen: Generation, url_for: Callable[[str], str]) -> dict[str, Any]:
    """The read-task body: the request as recorded, the status, and the image URLs once completed."""
    s = gen.spec
    asked = s.meta.get("placewise", {})
    urls = [url_for(img.id) for img in gen.images]
    error = None
    if gen.status in (Status.FAILED, Status.CANCELED):
        error = {"code": gen.error_code or gen.status.value, "message": gen.error_message or gen.status.value}
    return {
        "image_generation_task": {
            "id": number,
            "status": STATUS_NAMES[gen.status],
            "prompt": s.original_prompt or s.prompt,
            "model_type": TIER_OF.get(s.model or "", s.model),
            "aspect_ratio": s.aspect_ratio,
            "image_size": asked.get("image_size"),
            "creativity": asked.get("creativity"),
            "photorealistic": asked.get("photorealistic"),
            "random_seed": s.seed,
            "loras": [{"name": ref.name, "scale": ref.scale} for ref in s.loras],
            "width": s.width,
            "height": s.height,
            "image_url": urls[0] if urls else None,
            "image_urls": urls,
            "credits": gen.credits,
            "error": error,
            "created_at": iso(gen.created_at),
            "updated_at": iso(gen.updated_at),
            "finished_at": iso(gen.finished_at),
        }
    }
