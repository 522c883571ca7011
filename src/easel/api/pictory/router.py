"""Routes of the Pictory AI Studio dialect. Thin: parse, call GenerationService, shape the answer.

Errors have Pictory's shapes: 400 `{"code": "INVALID_REQUEST_BODY", "message": "Request body validation
failed.", "fields": [{"field", "message"}]}`, 401 `{"message": "Unauthorized"}`, 500 `{"message":
"Internal Server Error"}`, anything else `{"code", "message"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from easel.api.deps import GenerationsDep, LinksDep, ServicesDep, authenticated, image_links, raw_header
from easel.api.idempotency import idempotent
from easel.api.pictory.protocol import WIRE_NAMES, CreateImageRequest, created_json, job_json
from easel.api.routing import dialect_route
from easel.api.scheduling import SchedulingHeaders, scheduled
from easel.api.wire import FIELD_ERRORS, STRING, json_object
from easel.domain.errors import EaselError, FieldError
from easel.domain.keys import Principal

Writer = Annotated[Principal, Depends(authenticated(raw_header("authorization"), "generations:write"))]
Reader = Annotated[Principal, Depends(authenticated(raw_header("authorization"), "generations:read"))]

# Request-parsing messages in Joi's words, the way Pictory's own validation words them.
_JOI = {
    "Field required": "is required",
    "unknown field": "is not allowed",
    "Input should be a valid string": "must be a string",
    "Input should be a valid list": "must be an array",
    "Input should be a valid number": "must be a number",
    "Input should be a valid dictionary or object to extract fields from": "must be of type object",
}


def _field_message(f: FieldError) -> str:
    if f.message.startswith('"'):
        return f.message
    return f'"{f.field}" {_JOI.get(f.message, f.message)}'


def render_error(err: EaselError) -> Response:
    body: dict[str, Any]
    if err.status == 400 and err.code == "validation_error":
        fields = [{"field": f.field, "message": _field_message(f)} for f in err.fields]
        body = {
            "code": "INVALID_REQUEST_BODY",
            "message": "Request body validation failed.",
            "fields": fields,
        }
    elif err.status == 401:
        body = {"message": "Unauthorized"}
    elif err.status == 500:
        body = {"message": "Internal Server Error"}
    else:
        body = {"code": err.code.upper(), "message": err.message}
    return JSONResponse(body, status_code=err.status)


ERROR_SCHEMA = json_object(["message"], code=STRING, message=STRING, fields=FIELD_ERRORS)

router = APIRouter(
    prefix="/pictoryapis/v1/aistudio",
    route_class=dialect_route(render_error, WIRE_NAMES, ERROR_SCHEMA),
    tags=["pictory"],
)


@router.post("/images")
async def create_image(
    body: CreateImageRequest,
    svc: ServicesDep,
    principal: Writer,
    _idempotent: Annotated[None, Depends(idempotent)],
    scheduling: SchedulingHeaders,
) -> dict[str, Any]:
    body.check(svc.catalog)
    spec = scheduled(body.to_spec(svc.catalog), scheduling)  # X-Easel-Priority, Cancel-After
    gen = await anyio.to_thread.run_sync(svc.generations.submit, principal, spec, body.inputs())
    return created_json(gen)


@router.get("/images/{job_id}")
async def get_image_job(
    job_id: str, request: Request, generations: GenerationsDep, links: LinksDep, principal: Reader
) -> dict[str, Any]:
    gen = await anyio.to_thread.run_sync(generations.get_as, principal.project_id, job_id, "job")
    return job_json(gen, image_links(request, links, gen.images))
