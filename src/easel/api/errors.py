"""Error rendering per dialect.

`rendering(handler, render, names, max_body_bytes)` wraps a route handler: it counts the body against
the route's cap and checks a JSON body's shape first (api/limits.py); any EaselError, request
validation error or body-parsing refusal (Starlette's HTTPException: a malformed form, too many fields
or files, a part over 1 MB) raised while handling it is rendered by the dialect's `render`, so every
dialect answers errors in its own wire shape, with the status codes defined once in domain/errors.
Services name canonical fields (`aspect_ratio`); `names` maps them to the dialect's wire names
(`aspectRatio`) on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from easel.api.limits import check_json_body, limit_body
from easel.domain.errors import EaselError, FieldError, PayloadTooLarge, ValidationFailed

log = logging.getLogger(__name__)

Renderer = Callable[[EaselError], Response]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def from_validation(exc: RequestValidationError) -> ValidationFailed:
    """A request that did not parse, with the wire names the client used."""
    fields = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        # A JSON syntax error's location is (body, character offset): it names the body, not a field.
        name = "body" if err.get("type") == "json_invalid" else field_name(err.get("loc", ()))
        fields.append(FieldError(name, msg))
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
    return ValidationFailed(f"Invalid request: {summary}", fields)


def from_http(request: Request, exc: HTTPException) -> EaselError:
    """Starlette's and FastAPI's own refusals while reading a body (a malformed multipart or JSON body,
    too many fields or files, a part or a body over its cap) as Easel errors naming the body."""
    cause = exc.__cause__
    if isinstance(cause, EaselError):  # raised while FastAPI read the body (limit_body's 413)
        return cause
    if exc.status_code == 413:
        return PayloadTooLarge.for_field("body", "is too large")
    if exc.status_code == 400:
        if isinstance(cause, UnicodeDecodeError):
            detail = "is not valid UTF-8"
        elif isinstance(cause, RecursionError):
            detail = "is nested too deeply"
        else:
            detail = f"is malformed: {exc.detail}"
        return ValidationFailed.for_field("body", detail)
    return EaselError(str(exc.detail), [], exc.status_code, "http_error", dict(exc.headers or {}))


def rendering(handler: Handler, render: Renderer, names: Mapping[str, str], max_body_bytes: int) -> Handler:
    async def guarded(request: Request) -> Response:
        limit_body(request, max_body_bytes)
        try:
            await check_json_body(request)
            response = await handler(request)
        except RequestValidationError as exc:
            response = render(from_validation(exc))
        except EaselError as exc:
            response = _with_headers(render(exc.renamed(names)), exc.headers)
        except HTTPException as exc:
            err = from_http(request, exc)
            response = _with_headers(render(err), err.headers)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = render(EaselError("Internal server error"))
        return _with_headers(response, getattr(request.state, "rate_headers", {}))

    return guarded


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    for k, v in headers.items():
        response.headers[k] = v
    return response
