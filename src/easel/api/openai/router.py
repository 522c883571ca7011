"""Routes of the OpenAI Images dialect (and AIGNE Hub's generations route): parse, submit and wait
(api/openai/serving.py), shape OpenAI's answer."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from easel.api.deps import ServicesDep, authenticated, bearer_or_api_key
from easel.api.forms import form_limits, read_form
from easel.api.idempotency import idempotent
from easel.api.limits import JSON_IMAGES_MAX_BYTES, max_body, multipart_max_bytes
from easel.api.openai.protocol import (
    IMAGE_FIELDS,
    MAX_INPUT_IMAGES,
    WIRE_NAMES,
    EditRequest,
    GenerateRequest,
    VariationRequest,
    model_json,
)
from easel.api.openai.serving import generate, stream
from easel.api.routing import dialect_route
from easel.api.scheduling import SchedulingHeaders
from easel.api.wire import STRING, json_object
from easel.domain.errors import EaselError, NotFound, ValidationFailed
from easel.domain.keys import Principal

# What an SDK sends for extra_body={"loras": [...]} in a multipart body is `loras[][name]` fields.
FORM_LORAS = (
    "in a multipart body, loras is one form field holding the JSON array as text "
    '(the OpenAI SDK: extra_body={"loras": json.dumps([{"name": ..., "scale": ...}])})'
)


def render_error(err: EaselError) -> Response:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}} with OpenAI's statuses."""
    status, kind, code, message = err.status, "invalid_request_error", err.code, err.message
    param = err.param if err.param and err.param != "body" and not err.param.isdigit() else None
    if status == 400 and code == "content_policy_violation":  # OpenAI's code for its safety system's refusal
        pass
    elif status == 400:
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
    elif status == 429 and code == "queue_limit_exceeded":  # too many queued jobs: not a request rate
        kind = "requests"
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    # A budget does not refill by waiting: tell the SDKs' retry logic not to try again.
    headers = {"x-should-retry": "false"} if code == "insufficient_quota" else None
    return JSONResponse(body, status_code=status, headers=headers)


NULLABLE = {"type": ["string", "null"]}
ERROR_SCHEMA = json_object(
    ["error"],
    error=json_object(
        ["message", "type", "param", "code"], message=STRING, type=STRING, param=NULLABLE, code=NULLABLE
    ),
)

router = APIRouter(route_class=dialect_route(render_error, WIRE_NAMES, ERROR_SCHEMA), tags=["openai"])

Writer = Annotated[Principal, Depends(authenticated(bearer_or_api_key, "generations:write"))]
Reader = Annotated[Principal, Depends(authenticated(bearer_or_api_key, "generations:read"))]
Idempotent = Annotated[None, Depends(idempotent)]
M = TypeVar("M", bound=BaseModel)


@router.post("/v1/images/generations", openapi_extra=max_body(JSON_IMAGES_MAX_BYTES), response_model=None)
@router.post("/api/images/generations", openapi_extra=max_body(JSON_IMAGES_MAX_BYTES), response_model=None)
async def create_image(
    body: GenerateRequest,
    request: Request,
    svc: ServicesDep,
    principal: Writer,
    _i: Idempotent,
    scheduling: SchedulingHeaders,
) -> dict[str, Any] | Response:
    inputs = body.inputs(svc.links.image_of_link)
    spec = body.to_spec(svc.catalog)
    fmt = body.answer_format(spec.model, openai_path=request.url.path.startswith("/v1/"))
    if body.streamed:
        return await stream(svc, principal, spec, inputs, scheduling, "image_generation", render_error)
    return await generate(request, svc, principal, spec, inputs, fmt, scheduling)


def _form_body(model: type[BaseModel], files: dict[str, Any]) -> dict[str, Any]:
    """The multipart body of a route that reads its form itself, for the OpenAPI document."""
    schema = model.model_json_schema()
    schema["properties"] = schema.get("properties", {}) | files
    schema["required"] = [*schema.get("required", []), "image"]
    content = {"multipart/form-data": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


_FILE = {"type": "string", "format": "binary"}
_EDIT_FILES = {"image": _FILE, "image[]": {"type": "array", "items": _FILE}, "mask": _FILE}


@router.post(
    "/v1/images/edits",
    openapi_extra=max_body(multipart_max_bytes(MAX_INPUT_IMAGES + 1)) | _form_body(EditRequest, _EDIT_FILES),
    form_limits=form_limits(MAX_INPUT_IMAGES + 1),
    response_model=None,
)
async def edit_image(
    request: Request, svc: ServicesDep, principal: Writer, _i: Idempotent, scheduling: SchedulingHeaders
) -> dict[str, Any] | Response:
    body, files = await _multipart(request, EditRequest, frozenset({*IMAGE_FIELDS, "mask"}))
    inputs = EditRequest.inputs(files)
    spec = body.to_spec(svc.catalog, with_mask=any(name == "mask" for name, _ in files))
    fmt = body.answer_format(spec.model, openai_path=True)
    if body.streamed:
        return await stream(svc, principal, spec, inputs, scheduling, "image_edit", render_error)
    return await generate(request, svc, principal, spec, inputs, fmt, scheduling)


@router.post(
    "/v1/images/variations",
    openapi_extra=max_body(multipart_max_bytes(1)) | _form_body(VariationRequest, {"image": _FILE}),
    form_limits=form_limits(1),
)
async def vary_image(
    request: Request, svc: ServicesDep, principal: Writer, _i: Idempotent, scheduling: SchedulingHeaders
) -> dict[str, Any]:
    body, files = await _multipart(request, VariationRequest, frozenset({"image"}))
    inputs = VariationRequest.inputs(files)
    return await generate(request, svc, principal, body.to_spec(svc.catalog), inputs, body.format, scheduling)


@router.get("/v1/models")
async def list_models(svc: ServicesDep, _principal: Reader) -> dict[str, Any]:
    data = [
        model_json(name, entry, svc.catalog_mtime)
        for entry in svc.catalog.models.values()
        for name in (entry.name, *entry.aliases)
    ]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, svc: ServicesDep, _principal: Reader) -> dict[str, Any]:
    try:
        entry = svc.catalog.resolve(model_id)
    except ValidationFailed:
        raise NotFound("model", repr(model_id)) from None
    return model_json(model_id, entry, svc.catalog_mtime)


async def _multipart(
    request: Request, model: type[M], file_fields: frozenset[str]
) -> tuple[M, list[tuple[str, bytes]]]:
    """A multipart body: its text fields validated by `model`, its files (field, bytes) in order."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ValidationFailed("This route takes multipart/form-data (image files and form fields)")
    try:
        fields, files = await read_form(request, file_fields=file_fields)
    except ValidationFailed as e:
        if (e.param or "").startswith("loras["):
            raise ValidationFailed.for_field("loras", FORM_LORAS) from None
        raise
    if any(name.startswith("loras[") for name in fields):  # the SDK's form encoding of a list
        raise ValidationFailed.for_field("loras", FORM_LORAS)
    try:
        return model.model_validate(fields), files
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors) from None
