"""The route class of a dialect: its body cap (api/limits.py) and error rendering (api/errors.py) around
the Idempotency-Key handling (api/idempotency.py) around the route itself."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from easel.api.errors import Handler, Renderer, rendering
from easel.api.idempotency import settling
from easel.api.limits import body_cap
from easel.domain.errors import EaselError

# An error body of some JSON shape; each dialect passes its own.
ERROR_SCHEMA: dict[str, Any] = {"type": "object"}


def dialect_route(
    render: Renderer, names: Mapping[str, str] | None = None, error_schema: dict[str, Any] | None = None
) -> type[APIRoute]:
    """`names`: canonical field -> this dialect's wire field, for the errors services raise;
    `error_schema`: the JSON schema of its error body, for the OpenAPI document (api/openapi.py)."""
    wire = dict(names or {})
    shape = ERROR_SCHEMA if error_schema is None else error_schema

    class DialectRoute(APIRoute):
        render_error = staticmethod(render)
        error_schema = shape

        def get_route_handler(self) -> Handler:
            cap = body_cap(self.openapi_extra)  # api/limits.py: max_body()
            return rendering(settling(super().get_route_handler()), render, wire, cap)

    return DialectRoute


def api_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, APIRoute]]:
    """(path, route) of every API route, inside included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path_format, route
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from api_routes(inner.routes, prefix + str(getattr(context, "prefix", "")))


def method_not_allowed(app: FastAPI) -> Callable[[Request, Exception], Coroutine[Any, Any, Response]]:
    """The 405 handler: `Allow` lists every method of the path (each method is a route of its own, and
    Starlette's own 405 names only the first route's), in the error shape of the path's dialect."""

    async def handler(request: Request, exc: Exception) -> Response:
        path = request.url.path
        methods: set[str] = set()
        render: Renderer | None = None
        for _, route in api_routes(app.routes):
            if route.path_regex.match(path):
                methods |= route.methods or set()
                render = render or getattr(route, "render_error", None)
        allow = ", ".join(sorted(methods))
        err = EaselError(
            f"Method {request.method} not allowed; allowed: {allow}", [], 405, "method_not_allowed"
        )
        response = render(err) if render else Response(err.message, status_code=405)
        response.headers["Allow"] = allow
        return response

    return handler
