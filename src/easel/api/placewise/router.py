"""Routes of the Placewise ML dialect. Thin: parse, call GenerationService, shape the answer.

Every call names its loyalty club in `X-Loyalty-Club-Slug` (required) and sends its key in
`X-Client-Authorization`. Errors: `{"error": {"code", "message", "fields": [{"field", "message"}]}}`
with the status codes of domain/errors.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from easel.api.deps import GenerationsDep, LinksDep, ServicesDep, authenticated, image_links, raw_header
from easel.api.forms import read_form
from easel.api.idempotency import idempotent
from easel.api.placewise.protocol import (
    SLUG_HEADER,
    WIRE_NAMES,
    GenerateImageRequest,
    created_json,
    task_json,
)
from easel.api.routing import dialect_route
from easel.api.scheduling import SchedulingHeaders, scheduled
from easel.api.wire import FIELD_ERRORS, STRING, json_object
from easel.domain.errors import EaselError, NotFound, ValidationFailed
from easel.domain.keys import Principal

_KEY = raw_header("x-client-authorization")
Writer = Annotated[Principal, Depends(authenticated(_KEY, "generations:write"))]
Reader = Annotated[Principal, Depends(authenticated(_KEY, "generations:read"))]
SlugHeader = Annotated[str | None, Header(alias=SLUG_HEADER)]


def render_error(err: EaselError) -> Response:
    fields = [{"field": f.field, "message": f.message} for f in err.fields]
    body = {"error": {"code": err.code, "message": err.message, "fields": fields}}
    return JSONResponse(body, status_code=err.status)


ERROR_SCHEMA = json_object(
    ["error"],
    error=json_object(["code", "message", "fields"], code=STRING, message=STRING, fields=FIELD_ERRORS),
)

router = APIRouter(
    prefix="/v1/ml/general",
    route_class=dialect_route(render_error, WIRE_NAMES, ERROR_SCHEMA),
    tags=["placewise"],
)


def _slug(value: str | None) -> str:
    """The loyalty club the call acts in. Until API keys carry a club, it scopes the tasks it creates."""
    slug = (value or "").strip()
    if not slug:
        raise ValidationFailed.for_field(SLUG_HEADER, "header is required")
    return slug


async def _read_body(request: Request) -> dict[str, Any]:
    """The parameters of a multipart/form-data, urlencoded or JSON body, as one dict."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields, _ = await read_form(request)
        # An empty optional form field means "not given"; an empty prompt stays (and is refused).
        return {k: v for k, v in fields.items() if v != "" or k == "prompt"}
    if ctype in ("application/json", ""):
        raw = await request.body()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise ValidationFailed.for_field("body", "is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValidationFailed.for_field("body", "must be a JSON object")
        return data
    raise ValidationFailed.for_field(
        "Content-Type", "must be multipart/form-data, application/x-www-form-urlencoded or application/json"
    )


# The body is parsed by hand (form or JSON); this documents it in the OpenAPI schema.
_BODY = {"schema": GenerateImageRequest.model_json_schema()}
_BODY_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded", "application/json")


@router.post(
    "/generate_image",
    openapi_extra={"requestBody": {"required": True, "content": dict.fromkeys(_BODY_TYPES, _BODY)}},
)
async def generate_image(
    request: Request,
    svc: ServicesDep,
    principal: Writer,
    _idempotent: Annotated[None, Depends(idempotent)],
    scheduling: SchedulingHeaders,
    slug_header: SlugHeader = None,
) -> dict[str, Any]:
    slug = _slug(slug_header)
    try:
        body = GenerateImageRequest.model_validate(await _read_body(request))
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    spec = scheduled(body.to_spec(svc.catalog, slug), scheduling)  # X-Easel-Priority, Cancel-After
    generations = svc.generations

    def create() -> int:
        gen = generations.submit(principal, spec)
        return generations.task_number(principal.project_id, gen.id)

    return created_json(await anyio.to_thread.run_sync(create))


@router.get("/image_generation_tasks/{task_id}")
async def get_task(
    task_id: str,
    request: Request,
    generations: GenerationsDep,
    links: LinksDep,
    principal: Reader,
    slug_header: SlugHeader = None,
) -> dict[str, Any]:
    slug = _slug(slug_header)
    if not task_id.isdigit() or len(task_id) > 18:
        raise NotFound("task", task_id)
    number = int(task_id)
    try:
        gen = await anyio.to_thread.run_sync(generations.generation_by_number, principal.project_id, number)
    except NotFound:
        raise NotFound("task", task_id) from None
    # Another club's task does not exist for this one.
    if gen.meta.get("loyaltyClubSlug") != slug:
        raise NotFound("task", task_id)
    return task_json(number, gen, image_links(request, links, gen.images))
