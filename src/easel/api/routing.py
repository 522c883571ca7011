"""The route class of a dialect: its body cap (api/limits.py) and error rendering (api/errors.py) around
the Idempotency-Key handling (api/idempotency.py) around the route itself."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.routing import APIRoute

from easel.api.errors import Handler, Renderer, rendering
from easel.api.idempotency import settling
from easel.api.limits import body_cap


def dialect_route(render: Renderer, names: Mapping[str, str] | None = None) -> type[APIRoute]:
    """`names`: canonical field -> this dialect's wire field, for the errors services raise."""
    wire = dict(names or {})

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            cap = body_cap(self.openapi_extra)  # api/limits.py: max_body()
            return rendering(settling(super().get_route_handler()), render, wire, cap)

    return DialectRoute
