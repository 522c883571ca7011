"""What every native route module shares: the error shape, the route class, the callers by scope and
the generation as GET shows it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from easel.api.deps import authenticated, bearer_or_api_key, image_links
from easel.api.native.protocol import WIRE_NAMES, generation_json
from easel.api.routing import dialect_route
from easel.api.wire import FIELD_ERRORS, STRING, json_object
from easel.domain.errors import EaselError
from easel.domain.generation import Generation
from easel.domain.keys import Principal
from easel.service.links import LinkService


def render_error(err: EaselError) -> Response:
    fields = [{"field": f.field, "message": f.message} for f in err.fields]
    body = {"success": False, "error": {"code": err.code.upper(), "message": err.message, "fields": fields}}
    return JSONResponse(body, status_code=err.status)


ERROR_SCHEMA = json_object(
    ["success", "error"],
    success={"type": "boolean", "enum": [False]},
    error=json_object(["code", "message", "fields"], code=STRING, message=STRING, fields=FIELD_ERRORS),
)


def native_router(prefix: str = "/api/v1", tag: str = "native") -> APIRouter:
    return APIRouter(
        prefix=prefix,
        route_class=dialect_route(render_error, WIRE_NAMES, ERROR_SCHEMA),
        tags=[tag],
    )


def _caller(scope: str | None) -> Any:
    return Depends(authenticated(bearer_or_api_key, scope))


GenWrite = Annotated[Principal, _caller("generations:write")]
GenRead = Annotated[Principal, _caller("generations:read")]
ImagesRead = Annotated[Principal, _caller("images:read")]
ImagesWrite = Annotated[Principal, _caller("images:write")]
ImagesDelete = Annotated[Principal, _caller("images:delete")]
UsageRead = Annotated[Principal, _caller("usage:read")]
Admin = Annotated[Principal, _caller("admin")]
AnyKey = Annotated[Principal, _caller(None)]  # any valid key, whatever its scopes


def generation_body(request: Request, links: LinkService, gen: Generation) -> dict[str, Any]:
    """The generation exactly as GET /api/v1/generations/{id} shows it."""
    return generation_json(gen, image_links(request, links, gen.images), gen.project_id)


def page(items: list[Any], limit: int, offset: int, total: int) -> dict[str, Any]:
    """A list response with its pagination."""
    return {
        "success": True,
        "data": items,
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": total,
            "hasMore": offset + len(items) < total,
        },
    }
