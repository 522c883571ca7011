"""The route class of a dialect: its body cap (api/limits.py) and error rendering (api/errors.py) around
the Idempotency-Key handling (api/idempotency.py) around the route itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.routing import APIRoute

from easel.api.errors import Handler, Renderer, rendering
from easel.api.idempotency import settling
from easel.api.limits import body_cap

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
