"""What a request body may be: its size per route and content type, and the shape of a JSON body.

A route declares its cap with `openapi_extra=max_body(n)` (TEXT_MAX_BYTES when it declares none), which
also writes it into the OpenAPI document (`x-max-body-bytes`). The dialect's route class counts the
body as the route reads it (`limit_body`): a `Content-Length` over the cap is refused before anything
is read, a body without one (chunked) once the bytes streamed pass it; the refusal is a 413 in the
dialect's own shape (api/errors.py). docs/security.md ("Limits") lists every number.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from starlette.types import Message

from easel.domain.errors import PayloadTooLarge, ValidationFailed

MiB = 1024 * 1024
# An uploaded file (multipart) may be this large; OpenAI's own limit is 50 MB. api/forms.py enforces it.
MAX_FILE_BYTES = 50 * MiB
# A JSON body: native `sourceImageUrl` and `maskImageUrl` take data: URIs of up to 2,000,000 characters.
JSON_MAX_BYTES = 4 * MiB
# AIGNE Hub's JSON generations route takes up to 16 source images as base64 or data: URIs.
JSON_IMAGES_MAX_BYTES = 64 * MiB
# A body of text fields only (JSON or form: admin, webhooks, Wix, Pictory, Placewise), or the text
# fields around the files of a multipart body.
TEXT_MAX_BYTES = 1 * MiB
# A JSON body nested deeper than this is refused (it would otherwise reach Python's recursion limit).
MAX_JSON_DEPTH = 32


MAX_BODY_KEY = "x-max-body-bytes"


def max_body(limit: int) -> dict[str, Any]:
    """A route's `openapi_extra` declaring its body cap."""
    return {MAX_BODY_KEY: limit}


def body_cap(openapi_extra: dict[str, Any] | None) -> int:
    found = (openapi_extra or {}).get(MAX_BODY_KEY, TEXT_MAX_BYTES)
    return int(found)


def limit_body(request: Request, limit: int) -> None:
    """Count the request's body against `limit` as it is read (the route, its form parser, its JSON
    reader and the idempotency fingerprint all read through this), refusing it with a 413."""
    declared = request.headers.get("content-length", "")
    length = int(declared) if declared.isascii() and declared.isdigit() else None
    receive = request._receive
    seen = 0

    def refuse() -> PayloadTooLarge:
        return PayloadTooLarge.for_field("body", f"is larger than this route's limit of {limit} bytes")

    async def limited() -> Message:
        nonlocal seen
        if length is not None and length > limit:
            raise refuse()
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise refuse()
        return message

    request._receive = limited


def multipart_max_bytes(files: int) -> int:
    """A multipart body of up to `files` files at the file cap, plus its text fields."""
    return files * MAX_FILE_BYTES + TEXT_MAX_BYTES


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read this body as JSON (no content type counts, as it does)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind in ("", "application/json") or (kind.startswith("application/") and kind.endswith("+json"))


async def check_json_body(request: Request) -> None:
    """A JSON body's shape, before the route's model reads it: nested at most MAX_JSON_DEPTH levels,
    valid UTF-8, and no lone surrogate (`"\\ud800"`) in any string. The parsed body is cached by
    Starlette, so the route's own parsing does not read it again. A syntax error is left to the route,
    which names its position."""
    if request.method not in ("POST", "PUT", "PATCH") or not is_json(request.headers.get("content-type")):
        return
    raw = await request.body()
    if not raw.strip():
        return
    try:
        data = await request.json()
    except RecursionError:
        raise ValidationFailed.for_field("body", f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise ValidationFailed.for_field("body", "is not valid UTF-8") from None
    except ValueError:
        return
    check_json_value(data, MAX_JSON_DEPTH, "body")


def check_json_value(data: Any, max_depth: int, name: str) -> None:
    """`data` (parsed JSON) nested at most `max_depth` levels (a scalar is level 0, `{}` level 1), and no
    lone surrogate in its strings or keys. Errors name `name`, or for `body` the member of the body
    that holds the offending value (`meta`, `prompt`)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, name)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise ValidationFailed.for_field(path, "is not valid Unicode (a lone surrogate)")
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                raise ValidationFailed.for_field(path, f"is nested deeper than {max_depth} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    raise ValidationFailed.for_field(path, "has a key that is not valid Unicode")
                stack.append((item, depth + 1, str(key) if path == "body" else path))
