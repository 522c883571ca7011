"""Routes of the OpenAI Images dialect (and AIGNE Hub's generations route). Thin and synchronous: parse,
create the job through GenerationService, wait for it (bounded), shape OpenAI's answer."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from easel.api.deps import RuntimeDep, authenticated, bearer_or_api_key, image_url
from easel.api.errors import dialect_route
from easel.api.idempotency import idempotent
from easel.api.openai.protocol import (
    MAX_INPUT_IMAGES,
    PENDING_IMAGE,
    WIRE_NAMES,
    EditRequest,
    GenerateRequest,
    ResponseFormat,
    VariationRequest,
    images_response,
    model_json,
)
from easel.domain.errors import EaselError, NotFound, TimedOut, ValidationFailed
from easel.domain.generation import Generation, Status
from easel.domain.spec import GenerationSpec
from easel.imaging import decode_upload
from easel.runtime import Runtime

# Uploaded files larger than this are refused before decoding (OpenAI's own limit is 50 MB).
MAX_FILE_BYTES = 50 * 1024 * 1024
_IMAGE_FIELDS = ("image", "image[]")
_OWN_LINK = re.compile(r"/api/v1/images/([^/]+)/file$")


def render_error(err: EaselError) -> Response:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}} with OpenAI's statuses."""
    status, kind, code, message = err.status, "invalid_request_error", err.code, err.message
    param = err.param if err.param and err.param != "body" and not err.param.isdigit() else None
    if status == 400:
        first = err.fields[0].message if err.fields else ""
        if first == "unknown field":
            code, message = "unknown_parameter", f"Unknown parameter: '{param}'."
        elif first == "Field required":
            code, message = "missing_required_parameter", f"Missing required parameter: '{param}'."
        else:
            code = "invalid_value"
    elif status == 401:
        code = "invalid_api_key"
    elif status == 402:  # OpenAI reports an exhausted quota as a 429
        status, kind, code = 429, "insufficient_quota", "insufficient_quota"
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


router = APIRouter(route_class=dialect_route(render_error), tags=["openai"])

WriteProject = Annotated[str, Depends(authenticated(bearer_or_api_key, "generations:write"))]
ReadProject = Annotated[str, Depends(authenticated(bearer_or_api_key, "generations:read"))]


# -- images ----------------------------------------------------------------------------------------------


@router.post("/v1/images/generations")
@router.post("/api/images/generations")
async def create_image(
    body: GenerateRequest,
    request: Request,
    runtime: RuntimeDep,
    project: WriteProject,
    _idempotent: Annotated[None, Depends(idempotent)],
) -> dict[str, Any]:
    catalog = runtime.catalog
    refs = body.images
    if len(refs) > MAX_INPUT_IMAGES:
        raise ValidationFailed.for_field("image", f"at most {MAX_INPUT_IMAGES} images")
    # Validate everything that needs no upload first, so a bad request stores nothing.
    body.to_spec(catalog, [PENDING_IMAGE] * len(refs)).resolve(catalog, WIRE_NAMES)
    resolved = [_image_ref(runtime, ref) for ref in refs]
    uploads = [r for r in resolved if isinstance(r, bytes)]
    await anyio.to_thread.run_sync(lambda: [decode_upload(d, "image") for d in uploads])

    def store() -> list[str]:
        svc = runtime.generations
        # URLs first (a refused fetch then leaves the fewest stored uploads behind).
        fetched = {
            i: svc.import_image_url(project, r.url, field="image").id
            for i, r in enumerate(resolved)
            if isinstance(r, _Url)
        }
        return [
            fetched[i] if isinstance(r, _Url) else _store(runtime, project, r) for i, r in enumerate(resolved)
        ]

    ids = await anyio.to_thread.run_sync(store)
    return await _generate(request, runtime, project, body.to_spec(catalog, ids), body.format)


@router.post("/v1/images/edits")
async def edit_image(
    request: Request,
    runtime: RuntimeDep,
    project: WriteProject,
    _idempotent: Annotated[None, Depends(idempotent)],
) -> dict[str, Any]:
    body, files = await _read_form(request, EditRequest, {*_IMAGE_FIELDS, "mask"})
    images = [data for name, data in files if name in _IMAGE_FIELDS]
    masks = [data for name, data in files if name == "mask"]
    if not images:
        raise ValidationFailed.for_field("image", "at least one image file is required")
    if len(images) > MAX_INPUT_IMAGES:
        raise ValidationFailed.for_field("image", f"at most {MAX_INPUT_IMAGES} images")
    if len(masks) > 1:
        raise ValidationFailed.for_field("mask", "one mask at most")
    catalog = runtime.catalog
    pending_mask = PENDING_IMAGE if masks else None
    body.to_spec(catalog, [PENDING_IMAGE] * len(images), pending_mask).resolve(catalog, WIRE_NAMES)

    def store() -> tuple[list[str], str | None]:
        decoded = [decode_upload(data, "image")[0] for data in images]
        mask_png = openai_mask(masks[0], decoded[0].size) if masks else None
        svc = runtime.generations
        ids = [svc.upload_image(project, data, field="image").id for data in images]
        mask_id = svc.upload_image(project, mask_png, field="mask").id if mask_png else None
        return ids, mask_id

    ids, mask_id = await anyio.to_thread.run_sync(store)
    return await _generate(request, runtime, project, body.to_spec(catalog, ids, mask_id), body.format)


@router.post("/v1/images/variations")
async def vary_image(
    request: Request,
    runtime: RuntimeDep,
    project: WriteProject,
    _idempotent: Annotated[None, Depends(idempotent)],
) -> dict[str, Any]:
    body, files = await _read_form(request, VariationRequest, {"image"})
    if len(files) != 1:
        raise ValidationFailed.for_field("image", "exactly one image file is required")
    catalog = runtime.catalog
    body.to_spec(catalog, PENDING_IMAGE).resolve(catalog, WIRE_NAMES)
    data = files[0][1]
    img = await anyio.to_thread.run_sync(
        lambda: runtime.generations.upload_image(project, data, field="image")
    )
    return await _generate(request, runtime, project, body.to_spec(catalog, img.id), body.format)


# -- models ----------------------------------------------------------------------------------------------


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, project: ReadProject) -> dict[str, Any]:
    created = _catalog_time(runtime)
    data = [
        model_json(name, entry, created)
        for entry in runtime.catalog.models.values()
        for name in (entry.name, *entry.aliases)
    ]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, runtime: RuntimeDep, project: ReadProject) -> dict[str, Any]:
    try:
        entry = runtime.catalog.resolve(model_id)
    except ValidationFailed:
        raise NotFound("model", repr(model_id)) from None
    return model_json(model_id, entry, _catalog_time(runtime))


# -- helpers ---------------------------------------------------------------------------------------------


async def _generate(
    request: Request, runtime: Runtime, project: str, spec: GenerationSpec, fmt: ResponseFormat
) -> dict[str, Any]:
    """Create the job, wait for it (up to EASEL_OPENAI_TIMEOUT_SECONDS), answer with its images."""
    svc = runtime.generations
    gen = await anyio.to_thread.run_sync(lambda: svc.create(project, spec, WIRE_NAMES))
    gen = await _wait(runtime, project, gen.id)
    # A retry would create a second job, so tell OpenAI's SDKs not to retry a failed or late one.
    no_retry = {"x-should-retry": "false"}
    if gen.status is Status.FAILED:
        raise EaselError(
            gen.error_message or "The generation failed",
            status=500,
            code=gen.error_code or "generation_failed",
            headers=no_retry,
        )
    if gen.status is Status.CANCELED:
        raise EaselError(f"Generation {gen.id} was canceled", status=500, code="canceled", headers=no_retry)
    if gen.status is not Status.SUCCEEDED:
        timeout = runtime.settings.openai_timeout_seconds
        err = TimedOut(
            f"Generation {gen.id} did not finish within {timeout:g} seconds; it is still "
            f"{'queued' if gen.status is Status.QUEUED else 'running'} and can be fetched with "
            f"GET /api/v1/generations/{gen.id}"
        )
        err.headers.update(no_retry)
        raise err
    images = sorted(gen.images, key=lambda i: i.index)
    if fmt is ResponseFormat.URL:
        values = [image_url(request, runtime, img) for img in images]
    else:
        blobs = await anyio.to_thread.run_sync(lambda: [svc.image_bytes(img) for img in images])
        values = [base64.b64encode(b).decode("ascii") for b in blobs]
    return images_response(gen, fmt, values)


async def _wait(runtime: Runtime, project: str, gid: str) -> Generation:
    """GenerationService.wait, repeated: one call is capped by EASEL_MAX_WAIT_SECONDS."""
    deadline = anyio.current_time() + runtime.settings.openai_timeout_seconds
    while True:
        remaining = max(0.0, deadline - anyio.current_time())
        gen = await runtime.generations.wait(project, gid, remaining)
        if gen.status.finished or anyio.current_time() >= deadline:
            return gen
        if runtime.settings.max_wait_seconds <= 0:  # wait() returned at once: do not spin
            await anyio.sleep(min(1.0, remaining))


M = TypeVar("M", bound=BaseModel)


async def _read_form(
    request: Request, model: type[M], file_fields: set[str]
) -> tuple[M, list[tuple[str, bytes]]]:
    """A multipart body: its text fields validated by `model`, its files (field, bytes) in order."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ValidationFailed("This route takes multipart/form-data (image files and form fields)")
    try:
        form = await request.form(max_files=MAX_INPUT_IMAGES + 1, max_fields=100)
    except HTTPException as e:
        raise ValidationFailed(f"Malformed multipart body: {e.detail}") from None
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise ValidationFailed.for_field(name, "unexpected file; send a text value")
                if value.size is not None and value.size > MAX_FILE_BYTES:
                    raise ValidationFailed.for_field(name, f"file larger than {MAX_FILE_BYTES} bytes")
                files.append((name, await value.read()))
            elif name in file_fields:
                raise ValidationFailed.for_field(name, "must be a file (multipart file upload)")
            elif name in fields:
                raise ValidationFailed.for_field(name, "given more than once")
            else:
                fields[name] = value
    finally:
        await form.close()
    try:
        return model.model_validate(fields), files
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors) from None


@dataclass(frozen=True)
class _Url:
    url: str


def _image_ref(runtime: Runtime, ref: str) -> bytes | str | _Url:
    """AIGNE's `image`: a link this server issued for one of its images (-> that image's id), another
    URL or a data: URI (-> fetched by GenerationService.import_image_url with its SSRF rules), or plain
    base64 (-> the bytes to upload)."""
    ref = ref.strip()
    if ref[:7].lower() == "http://" or ref[:8].lower() == "https://":
        parts = urlsplit(ref)
        match = _OWN_LINK.search(parts.path)
        if match:
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            image_id, expires, signature = match.group(1), q.get("expires", "0"), q.get("signature", "")
            if expires.isdigit() and runtime.signer.verify(image_id, int(expires), signature):
                return image_id
        return _Url(ref)
    if ref[:5].lower() == "data:":
        return _Url(ref)
    try:
        return base64.b64decode("".join(ref.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed.for_field("image", "must be base64, a data: URI or an image URL") from None


def _store(runtime: Runtime, project: str, ref: bytes | str) -> str:
    if isinstance(ref, str):
        return ref
    return runtime.generations.upload_image(project, ref, field="image").id


def openai_mask(data: bytes, size: tuple[int, int]) -> bytes:
    """OpenAI's mask (transparent pixels = the area to edit) as Easel's: an "L" PNG, white = repaint."""
    mask, _mime = decode_upload(data, "mask")
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise ValidationFailed.for_field(
            "mask", "must be a PNG with an alpha channel (fully transparent pixels mark the area to edit)"
        )
    if mask.size != size:
        raise ValidationFailed.for_field(
            "mask",
            f"must have the image's dimensions ({size[0]}x{size[1]}), got {mask.width}x{mask.height}",
        )
    alpha = mask.convert("RGBA").getchannel("A")
    canonical = alpha.point(lambda a: 255 if a == 0 else 0).convert("L")
    buf = io.BytesIO()
    canonical.save(buf, "PNG")
    return buf.getvalue()


def _catalog_time(runtime: Runtime) -> int:
    """`created` of GET /v1/models: when the catalog file last changed."""
    try:
        return int(runtime.settings.catalog.stat().st_mtime)
    except OSError:
        return 0
