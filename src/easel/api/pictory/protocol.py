"""Wire models of the Pictory AI Studio dialect and their translation to and from the canonical model.

Field messages follow Pictory's (Joi's) wording: `"prompt" is required`,
`"prompt" length must be at least 5 characters long`, `"style" must be one of [...]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from easel.api.wire import CamelWire, Loras, LoraWire, iso
from easel.domain.catalog import Catalog
from easel.domain.errors import FieldError, ValidationFailed
from easel.domain.families import Task
from easel.domain.generation import Generation, Status
from easel.domain.inputs import ImageInput, Role
from easel.domain.spec import GenerationSpec
from easel.domain.urls import is_http_url

MODELS = ("seedream3.0", "flux-schnell", "nanobanana", "nanobanana-pro")
DEFAULT_MODEL = "seedream3.0"
STYLES = ("photorealistic", "artistic", "cartoon", "minimalist", "vintage", "futuristic")
PROMPT_MIN, PROMPT_MAX = 5, 5000

# Pictory's job states; a canceled job (possible through the native API) reads as failed.
STATUS_NAMES: dict[Status, str] = {
    Status.QUEUED: "in-progress",
    Status.RUNNING: "in-progress",
    Status.SUCCEEDED: "completed",
    Status.FAILED: "failed",
    Status.CANCELED: "failed",
}

WIRE_NAMES = {
    "aspect_ratio": "aspectRatio",
    "source_image_ids": "referenceImageUrl",
    "webhook_url": "webhook",
}


def _one_of(values: tuple[str, ...] | list[str]) -> str:
    return f"must be one of [{', '.join(values)}]"


class CreateImageRequest(CamelWire):
    """POST /pictoryapis/v1/aistudio/images, in the document's field order."""

    # The document's length rules, checked by check() in Pictory's words; stated here for the schema.
    prompt: str = Field(json_schema_extra={"minLength": PROMPT_MIN, "maxLength": PROMPT_MAX})
    model: str | None = None
    aspect_ratio: str | None = None
    style: str | None = None
    reference_image_url: str | None = None
    webhook: str | None = None
    # Easel extension (not in Pictory's document): [{"name": ..., "scale": ...}], LoRAs of the catalog.
    loras: Loras | None = None

    def check(self, catalog: Catalog) -> None:
        """The document's rules, every failing field at once (Pictory answers with a `fields` list), then
        the service checks the catalog's, all before the reference image is fetched."""
        errors = []
        if len(self.prompt.strip()) < PROMPT_MIN:
            errors.append(FieldError("prompt", f"length must be at least {PROMPT_MIN} characters long"))
        elif len(self.prompt) > PROMPT_MAX:
            errors.append(
                FieldError("prompt", f"length must be less than or equal to {PROMPT_MAX} characters long")
            )
        if self.model is not None and self.model not in MODELS:
            errors.append(FieldError("model", _one_of(MODELS)))
        elif self.aspect_ratio is not None:
            allowed = catalog.resolve(self.model_name).aspect_ratios
            if self.aspect_ratio not in allowed:
                errors.append(FieldError("aspectRatio", _one_of(allowed)))
        if self.style is not None and self.style not in STYLES:
            errors.append(FieldError("style", _one_of(STYLES)))
        if self.reference_image_url is not None and not is_http_url(self.reference_image_url):
            errors.append(FieldError("referenceImageUrl", "must be a valid uri"))
        if self.webhook is not None and not is_http_url(self.webhook):
            errors.append(FieldError("webhook", "must be a valid uri"))
        if errors:
            raise ValidationFailed("Request body validation failed.", errors)

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL

    def to_spec(self, catalog: Catalog) -> GenerationSpec:
        model = self.model_name
        return GenerationSpec(
            prompt=self.prompt,
            model=model,
            task=Task.IMAGE_TO_IMAGE if self.reference_image_url else Task.TEXT_TO_IMAGE,
            # "Defaults to the first supported aspect ratio of the chosen model."
            aspect_ratio=self.aspect_ratio or catalog.resolve(model).aspect_ratios[0],
            style=self.style,
            webhook_url=self.webhook,
            loras=LoraWire.refs(self.loras),
        )

    def inputs(self) -> list[ImageInput]:
        """The reference image: the source of an image-to-image job, fetched by the service."""
        url = self.reference_image_url
        return [ImageInput.from_url(Role.SOURCE, url, "referenceImageUrl")] if url else []


def created_json(gen: Generation) -> dict[str, Any]:
    return {"success": True, "data": {"jobId": gen.id}}


def job_json(gen: Generation, url_for: Callable[[str], str]) -> dict[str, Any]:
    """GET of a job: its state, what was asked, the credits charged and, once completed, the image."""
    s = gen.spec
    images = [
        {"url": url_for(i.id), "width": i.width, "height": i.height, "mimeType": i.mime} for i in gen.images
    ]
    data: dict[str, Any] = {
        "jobId": gen.id,
        "status": STATUS_NAMES[gen.status],
        "prompt": s.original_prompt or s.prompt,
        "model": s.model,
        "aspectRatio": s.aspect_ratio,
        "style": s.style,
        "loras": [{"name": ref.name, "scale": ref.scale} for ref in s.loras],
        "webhook": s.webhook_url,
        "width": s.width,
        "height": s.height,
        "url": images[0]["url"] if images else None,
        "images": images,
        "credits": gen.credits,
        "createdAt": iso(gen.created_at),
        "updatedAt": iso(gen.updated_at),
        "completedAt": iso(gen.finished_at),
    }
    if gen.status in (Status.FAILED, Status.CANCELED):
        data["error"] = {
            "code": (gen.error_code or gen.status.value).upper(),
            "message": gen.error_message or f"The job was {gen.status.value}",
        }
    return {"success": True, "data": data}
