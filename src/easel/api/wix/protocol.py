"""Wire models of the Wix social-publisher dialect and their translation to and from the canonical model.

GenerateImage `{userInput, imageUrl}` is an image-to-image job on the catalog's default model from the
imported source photo, in the photo's aspect ratio (the model's closest), filed in the "Social Marketing
AI Media" folder; GetGeneratedImage reports IN_PROGRESS, READY (imageUrl and fileId) or FAILED
(failureReason).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from easel.domain.errors import FieldError, ValidationFailed
from easel.domain.families import Task
from easel.domain.generation import Generation, Status
from easel.domain.inputs import ImageInput, Role
from easel.domain.scheduling import DEADLINE_EXCEEDED
from easel.domain.spec import GenerationSpec
from easel.domain.urls import is_http_url

FOLDER = "Social Marketing AI Media"
MAX_USER_INPUT = 3000
NO_LORAS = (
    "Wix's GenerateImage takes no LoRAs; apply LoRAs through the native API (POST /api/v1/generations) "
    "or the OpenAI dialect"
)

# Wix's GetGeneratedImage knows IN_PROGRESS, READY and FAILED; a canceled job is FAILED.
STATUS_NAMES: dict[Status, str] = {
    Status.QUEUED: "IN_PROGRESS",
    Status.RUNNING: "IN_PROGRESS",
    Status.SUCCEEDED: "READY",
    Status.FAILED: "FAILED",
    Status.CANCELED: "FAILED",
}

# Canonical spec field -> wire field, so errors from the catalog check name what the client sent.
WIRE_NAMES = {"prompt": "userInput", "source_image_ids": "imageUrl"}


class GenerateImageRequest(BaseModel):
    """POST /social-publisher/v1/generate-image. Types and presence here; the documented rules in check()."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    # The document's rules, checked by check(); stated here for the schema.
    user_input: str = Field(
        alias="userInput", json_schema_extra={"minLength": 1, "maxLength": MAX_USER_INPUT}
    )
    image_url: str = Field(alias="imageUrl")
    # Not Wix's: GenerateImage's shape is {userInput, imageUrl}. Read only to refuse it in words (LoRAs
    # are an extension of the native, OpenAI, Pictory and Placewise dialects), never applied.
    loras: SkipJsonSchema[Any] = None

    def check(self) -> None:
        """The document's rules (userInput maxLength 3000, imageUrl format WEB_URL), every failing field at
        once; the catalog's are checked by the service, all before the source image is fetched."""
        errors = []
        if self.loras not in (None, []):
            errors.append(FieldError("loras", NO_LORAS))
        if not self.user_input.strip():
            errors.append(FieldError("userInput", "must not be empty"))
        elif len(self.user_input) > MAX_USER_INPUT:
            errors.append(FieldError("userInput", f"must be at most {MAX_USER_INPUT} characters"))
        if not is_http_url(self.image_url):
            errors.append(FieldError("imageUrl", "must be a web URL (http or https)"))
        if errors:
            summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
            raise ValidationFailed(f"Invalid request: {summary}", errors)

    def to_spec(self) -> GenerationSpec:
        """Image-to-image on the default model, in the source photo's shape (the model's closest ratio)."""
        return GenerationSpec(
            prompt=self.user_input, task=Task.IMAGE_TO_IMAGE, match_source_aspect=True, folder=FOLDER
        )

    def inputs(self) -> list[ImageInput]:
        return [ImageInput.from_url(Role.SOURCE, self.image_url, "imageUrl")]


def generate_image_json(gen: Generation) -> dict[str, Any]:
    return {"status": "OK", "executionId": gen.id}


def generated_image_json(gen: Generation, url_for: Callable[[str], str]) -> dict[str, Any]:
    """GetGeneratedImage: fields without a value are left out, as Wix's JSON does."""
    body: dict[str, Any] = {"executionId": gen.id, "status": STATUS_NAMES[gen.status]}
    if gen.status is Status.SUCCEEDED and gen.images:
        body["imageUrl"] = url_for(gen.images[0].id)
        body["fileId"] = gen.images[0].id
    elif gen.status is Status.CANCELED and gen.error_code == DEADLINE_EXCEEDED:  # Cancel-After
        body["failureReason"] = gen.error_message or "The generation had not started by its deadline"
    elif gen.status is Status.CANCELED:
        body["failureReason"] = "The generation was canceled"
    elif gen.status is Status.FAILED:
        body["failureReason"] = gen.error_message or "The generation failed"
    return body
