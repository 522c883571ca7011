"""Routes of the Wix social-publisher dialect. Thin: parse, call GenerationService, shape the answer.

Errors have Wix's shape: `{"message", "details": {"validationError": {"fieldViolations": [{field,
description}]}}}` for invalid input, `{"message", "details": {"applicationError": {code, description,
data}}}` for everything else, with the status codes of domain/errors.py.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from easel.api.deps import GenerationsDep, LinksDep, authenticated, image_links, raw_header
from easel.api.idempotency import idempotent
from easel.api.routing import dialect_route
from easel.api.scheduling import SchedulingHeaders, scheduled
from easel.api.wix.protocol import WIRE_NAMES, GenerateImageRequest, generate_image_json, generated_image_json
from easel.domain.errors import EaselError
from easel.domain.keys import Principal

# Wix apps send their key as the whole Authorization header.
Writer = Annotated[Principal, Depends(authenticated(raw_header("authorization"), "generations:write"))]
Reader = Annotated[Principal, Depends(authenticated(raw_header("authorization"), "generations:read"))]


def render_error(err: EaselError) -> Response:
    details: dict[str, Any]
    if err.status == 400 and err.fields:
        violations = [{"field": f.field, "description": f.message} for f in err.fields]
        details = {"validationError": {"fieldViolations": violations}}
    else:
        details = {"applicationError": {"code": err.code.upper(), "description": err.message, "data": {}}}
    return JSONResponse({"message": err.message, "details": details}, status_code=err.status)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message", "details"],
    "properties": {
        "message": {"type": "string"},
        "details": {
            "type": "object",
            "properties": {
                "validationError": {
                    "type": "object",
                    "properties": {
                        "fieldViolations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string"},
                                    "description": {"type": "string"},
                                },
                            },
                        }
                    },
                },
                "applicationError": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "description": {"type": "string"},
                        "data": {"type": "object"},
                    },
                },
            },
        },
    },
}

router = APIRouter(
    prefix="/social-publisher/v1",
    route_class=dialect_route(render_error, WIRE_NAMES, ERROR_SCHEMA),
    tags=["wix"],
)


@router.post("/generate-image")
async def generate_image(
    body: GenerateImageRequest,
    generations: GenerationsDep,
    principal: Writer,
    _idempotent: Annotated[None, Depends(idempotent)],
    scheduling: SchedulingHeaders,
) -> dict[str, Any]:
    body.check()
    spec = scheduled(body.to_spec(), scheduling)  # X-Easel-Priority, Cancel-After
    gen = await anyio.to_thread.run_sync(generations.submit, principal, spec, body.inputs())
    return generate_image_json(gen)


@router.get("/generated-image/{execution_id}")
async def get_generated_image(
    execution_id: str, request: Request, generations: GenerationsDep, links: LinksDep, principal: Reader
) -> dict[str, Any]:
    gen = await anyio.to_thread.run_sync(generations.get_as, principal.project_id, execution_id, "execution")
    return generated_image_json(gen, image_links(request, links, gen.images))
