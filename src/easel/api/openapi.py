"""The OpenAPI document as Easel answers: each operation lists the status codes it can answer, each
error in its dialect's own shape, instead of FastAPI's default 422 (Easel answers a request that does
not validate with a 400). `install(app)` replaces the app's `openapi()`.

Which codes an operation lists follows from the route: a 400 where it takes parameters or a body;
401, 403 and 429 where it needs a key; 404 where it names a resource (a path parameter, or a body
that may name images, projects, keys); 409 on writes (a state that does not allow it, an
Idempotency-Key still in progress); 422 and 402 on the create routes (Idempotency-Key reused with
another body; budget); 413 where it takes a body (its cap is `x-max-body-bytes`); and OpenAI's
synchronous answers: 500 (the job failed), 503, 504 (it did not finish in time).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from easel.api.limits import MAX_BODY_KEY
from easel.api.routing import api_routes

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_OPENAI_CREATES = {
    "/v1/images/generations",
    "/api/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
}


def _dependency_names(route: APIRoute) -> set[str]:
    names: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        names.add(getattr(dep.call, "__name__", ""))
        stack.extend(dep.dependencies)
    return names


def statuses(route: APIRoute, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses `route` can answer for `method` (see the module's docstring)."""
    deps = _dependency_names(route)
    authed = any(n.startswith("authenticated_") for n in deps)
    creates = "idempotent" in deps
    body = method in ("POST", "PUT", "PATCH")
    found: set[int] = set()
    if operation.get("parameters") or body or "requestBody" in operation:
        found.add(400)
    if authed:
        found |= {401, 403, 429}
        if "{" in route.path or body:
            found.add(404)
        if method in _WRITES:
            found.add(409)
    if creates:
        found |= {402, 409, 422}
    if body:
        found.add(413)
    if route.path in _OPENAI_CREATES:
        found |= {500, 503, 504}
    elif creates:
        found.add(503)  # a source image by URL that cannot be fetched now
    if route.path.endswith("/file"):  # the signed link: its signature is the credential
        found |= {403, 404}
    return found


def document(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    for path_format, route in api_routes(routes):
        error_schema = getattr(route, "error_schema", None)
        path = schema["paths"].get(path_format, {})
        for method in route.methods or ():
            operation = path.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if error_schema is None:
                continue
            for code in sorted(statuses(route, method, operation)):
                responses[str(code)] = {
                    "description": HTTPStatus(code).phrase,
                    "content": {"application/json": {"schema": error_schema}},
                }
            limit = (route.openapi_extra or {}).get(MAX_BODY_KEY)
            if limit is not None and "413" in responses:
                responses["413"]["description"] = f"The body is larger than {limit} bytes"
    defs = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        defs.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = document(built, app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
