"""Wire models of the OpenAI Images dialect (and AIGNE Hub) and their translation to and from the
canonical model. Field names are OpenAI's (snake_case). See docs/api/openai.md for every mapping."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from easel.api.wire import FormLoras, Loras, LoraWire, StrictWire
from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.errors import EaselError, ValidationFailed
from easel.domain.families import Task
from easel.domain.generation import Generation
from easel.domain.inputs import ImageInput, MaskEncoding, Role
from easel.domain.spec import MAX_SEED, GenerationSpec, OutputFormat

# The model OpenAI's API and the AIGNE document use when a request names none; used when the catalog
# knows that name, else the catalog's own default.
DEFAULT_MODEL = "dall-e-2"
# The prompt of a variation (OpenAI's variations take no prompt). Neutral words: the built-in model
# ignores words outside its vocabulary, so the source image alone steers the result.
VARIATION_PROMPT = "a variation of this image"
# OpenAI accepts up to 16 images per edit.
MAX_INPUT_IMAGES = 16
IMAGE_FIELDS = ("image", "image[]")

# Canonical spec field -> OpenAI wire field, so validation errors name what the client sent (`param`).
WIRE_NAMES = {
    "source_image_ids": "image",
    "mask_image_id": "mask",
    # An unsupported task means the chosen model cannot edit / vary images.
    "task": "model",
    "width": "size",
    "height": "size",
    "aspect_ratio": "size",
    "image_size": "size",
    "enhance_template": "enhance",
}


class ResponseFormat(StrEnum):
    URL = "url"
    B64_JSON = "b64_json"


class _Common(StrictWire):
    """What every Images route accepts."""

    model: str | None = None
    n: int | None = Field(None, ge=1, le=10)
    size: str | None = None
    response_format: ResponseFormat | None = Field(None, strict=False)
    user: str | None = Field(None, max_length=256)
    # Easel extensions (not OpenAI parameters), documented in docs/api/openai.md.
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=50)
    strength: float | None = Field(None, gt=0, le=1)
    # [{"name": ..., "scale": ...}]; the official SDKs send it with extra_body={"loras": [...]}.
    loras: Loras | None = None

    def _spec_fields(self, catalog: Catalog) -> dict[str, Any]:
        return {
            "model": self.model or default_model(catalog),
            "n": self.n or 1,
            "size": self.size or None,
            "seed": self.seed,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "guidance": self.guidance,
            "strength": self.strength,
            "loras": LoraWire.refs(self.loras),
            "meta": {"user": self.user} if self.user else {},
        }

    @property
    def format(self) -> ResponseFormat:
        return self.response_format or ResponseFormat.URL

    def answer_format(self, model: str | None, *, openai_path: bool) -> ResponseFormat:
        """How the images are answered. On OpenAI's paths (/v1/images/...) the GPT image models always
        answer `b64_json`, as at OpenAI, and `response_format: url` for them is a 400; the other models,
        and every model on AIGNE Hub's route (its document: url by default), answer as asked."""
        if openai_path and is_gpt_image(model):
            if self.response_format is ResponseFormat.URL:
                raise ValidationFailed.for_field(
                    "response_format", f"{model} always answers b64_json; omit response_format"
                )
            return ResponseFormat.B64_JSON
        return self.format


class _Output(_Common):
    """The output options of the GPT-image routes (generations, edits)."""

    quality: str | None = None
    output_format: OutputFormat | None = Field(None, strict=False)
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    safety_identifier: str | None = Field(None, max_length=256)
    enhance: bool = True  # Easel extension: automatic prompt enhancement where the model allows it

    def _output_fields(self, catalog: Catalog) -> dict[str, Any]:
        if self.background == "transparent":
            raise ValidationFailed.for_field("background", "transparent backgrounds are not supported")
        if self.partial_images and not self.stream:
            raise ValidationFailed.for_field(
                "partial_images", "partial images are streamed: send stream=true"
            )
        fields = self._spec_fields(catalog)
        if self.safety_identifier:
            fields["meta"] = fields["meta"] | {"user": self.safety_identifier}
        return fields | {
            "quality": self.quality,
            "output_format": self.output_format or OutputFormat.PNG,
            "output_compression": self.output_compression,
            "enhance": self.enhance,
            "previews": self.partial_images or 0,
        }

    @property
    def streamed(self) -> bool:
        return bool(self.stream)


class GenerateRequest(_Output):
    """POST /v1/images/generations and AIGNE Hub's POST /api/images/generations (JSON)."""

    prompt: str = Field(min_length=1)
    style: str | None = None
    moderation: Literal["low", "auto"] | None = None
    # AIGNE Hub: source image(s) for editing: base64, a data: URI, an http(s) URL (fetched SSRF-safely) or a
    # link this server issued (router._image_ref).
    image: str | list[str] | None = None

    @property
    def images(self) -> list[str]:
        if self.image is None:
            return []
        return [self.image] if isinstance(self.image, str) else list(self.image)

    def to_spec(self, catalog: Catalog) -> GenerationSpec:
        return GenerationSpec(
            prompt=self.prompt,
            task=Task.IMAGE_TO_IMAGE if self.images else Task.TEXT_TO_IMAGE,
            style=self.style,
            moderation=self.moderation or "auto",  # the content policy's level (docs/policy.md)
            **self._output_fields(catalog),
        )

    def inputs(self, own_link: Callable[[str], str | None]) -> list[ImageInput]:
        """AIGNE's `image`: a link this server issued for one of its images (`own_link` gives its id),
        another URL or a data: URI (fetched by the service with its SSRF rules), or plain base64."""
        refs = self.images
        if len(refs) > MAX_INPUT_IMAGES:
            raise ValidationFailed.for_field("image", f"at most {MAX_INPUT_IMAGES} images")
        found = []
        for raw in refs:
            ref = raw.strip()
            if ref[:7].lower() == "http://" or ref[:8].lower() == "https://":
                image_id = own_link(ref)
                found.append(
                    ImageInput.stored(Role.SOURCE, image_id, "image")
                    if image_id
                    else ImageInput.from_url(Role.SOURCE, ref, "image")
                )
            elif ref[:5].lower() == "data:":
                found.append(ImageInput.from_url(Role.SOURCE, ref, "image"))
            else:
                try:
                    data = base64.b64decode("".join(ref.split()), validate=True)
                except (binascii.Error, ValueError):
                    raise ValidationFailed.for_field(
                        "image", "must be base64, a data: URI or an image URL"
                    ) from None
                found.append(ImageInput.upload(Role.SOURCE, data, "image"))
        return found


class EditRequest(_Output):
    """POST /v1/images/edits (multipart; the files `image`/`image[]` and `mask` are handled apart)."""

    model_config = ConfigDict(strict=False)  # form fields are strings: "2", "false"

    prompt: str = Field(min_length=1)
    input_fidelity: Literal["high", "low"] | None = None
    loras: FormLoras | None = None  # a form field: the JSON array as text

    def to_spec(self, catalog: Catalog, with_mask: bool) -> GenerationSpec:
        fields = self._output_fields(catalog)
        if self.input_fidelity is not None:  # recorded with the job (the built-in model has no such knob)
            fields["meta"] = fields["meta"] | {"input_fidelity": self.input_fidelity}
        return GenerationSpec(
            prompt=self.prompt, task=Task.INPAINT if with_mask else Task.IMAGE_TO_IMAGE, **fields
        )

    @staticmethod
    def inputs(files: list[tuple[str, bytes]]) -> list[ImageInput]:
        """The files of an edit: `image` / `image[]` (1 to 16 sources) and at most one `mask`, whose
        transparent pixels mark the area to edit."""
        images = [data for name, data in files if name in IMAGE_FIELDS]
        masks = [data for name, data in files if name == "mask"]
        if not images:
            raise ValidationFailed.for_field("image", "at least one image file is required")
        if len(images) > MAX_INPUT_IMAGES:
            raise ValidationFailed.for_field("image", f"at most {MAX_INPUT_IMAGES} images")
        if len(masks) > 1:
            raise ValidationFailed.for_field("mask", "one mask at most")
        return [ImageInput.upload(Role.SOURCE, data, "image") for data in images] + [
            ImageInput.upload(Role.MASK, data, "mask", MaskEncoding.TRANSPARENT) for data in masks
        ]


class VariationRequest(_Common):
    """POST /v1/images/variations (multipart; the file `image` is handled apart)."""

    model_config = ConfigDict(strict=False)  # form fields are strings: "2"

    loras: FormLoras | None = None  # a form field: the JSON array as text

    def to_spec(self, catalog: Catalog) -> GenerationSpec:
        return GenerationSpec(
            prompt=VARIATION_PROMPT, task=Task.VARIATION, enhance=False, **self._spec_fields(catalog)
        )

    @staticmethod
    def inputs(files: list[tuple[str, bytes]]) -> list[ImageInput]:
        if len(files) != 1:
            raise ValidationFailed.for_field("image", "exactly one image file is required")
        return [ImageInput.upload(Role.SOURCE, files[0][1], "image")]


def default_model(catalog: Catalog) -> str | None:
    """`dall-e-2` when the catalog knows it, else None (the catalog's default)."""
    try:
        return catalog.resolve(DEFAULT_MODEL).name
    except EaselError:
        return None


def images_response(gen: Generation, fmt: ResponseFormat, values: list[str]) -> dict[str, Any]:
    """An ImagesResponse: `values` are the images' URLs or base64 strings, in image order."""
    s = gen.spec
    revised = s.prompt if s.original_prompt and s.prompt != s.original_prompt else None
    data: list[dict[str, Any]] = []
    for value in values:
        item: dict[str, Any] = {fmt.value: value}
        if revised is not None:
            item["revised_prompt"] = revised
        data.append(item)
    body: dict[str, Any] = {
        "created": int(gen.created_at.timestamp()),
        "data": data,
        "size": f"{s.width}x{s.height}",
        "output_format": s.output_format.value,
    }
    if s.quality is not None:
        body["quality"] = s.quality
    if is_gpt_image(s.model):  # as OpenAI: token usage for the GPT image models only
        body["usage"] = usage(gen)
    # Extension: how to find this job in the native API, and what it cost in credits.
    body["easel"] = {
        "generation_id": gen.id,
        "model": s.model,
        "seed": s.seed,
        "credits": gen.credits,
        "images": len(values),
        "loras": [{"name": ref.name, "scale": ref.scale} for ref in s.loras],
    }
    return body


def is_gpt_image(model: str | None) -> bool:
    """OpenAI's GPT image models (gpt-image-1, gpt-image-1-mini, gpt-image-1.5...) by catalog name."""
    return (model or "").startswith("gpt-image")


TEXT_TOKEN_BYTES = 4  # one text token: four bytes of prompt


def image_tokens(width: int, height: int) -> int:
    return -(-width // 32) * -(-height // 32)


def usage(gen: Generation, images: int | None = None, *, with_input: bool = True) -> dict[str, Any]:
    """OpenAI's `usage` in Easel's own figures (docs/api/openai.md, "Usage"): text tokens are the prompt's
    bytes / 4 (rounded up), image tokens 32 x 32 tiles: each input image at the output size it is
    fitted to, and each output image; `images` output images (default all), input counted only
    `with_input` (the first of several completed events)."""
    s = gen.spec
    width, height = s.width or 0, s.height or 0
    inputs = len(s.source_image_ids)  # the mask is not an image of its own
    text = -(-len(s.prompt.encode()) // TEXT_TOKEN_BYTES) if with_input else 0
    image_in = inputs * image_tokens(width, height) if with_input else 0
    output = (s.n if images is None else images) * image_tokens(width, height)
    return {
        "input_tokens": text + image_in,
        "input_tokens_details": {"image_tokens": image_in, "text_tokens": text},
        "output_tokens": output,
        "total_tokens": text + image_in + output,
    }


def model_json(model_id: str, entry: ModelEntry, created: int) -> dict[str, Any]:
    """One entry of GET /v1/models (aliases are listed as models of their own, `root` says which)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "easel", "root": entry.name}
