"""Idempotency-Key on create routes, for every dialect.

A create route declares `Depends(idempotent)` (after its auth dependency), and its route class wraps the
handler in `settling` (api/routing.py). With an `Idempotency-Key`
header, the first request with that key (per project and route) runs and its 2xx response is stored;
a retry with the same body gets that response replayed (same job, header `Idempotent-Replayed: true`);
a retry with another body is a 422; a retry while the first is still running is a 409. A request that
fails (4xx/5xx) leaves no record, so it can be corrected and retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from easel.api.deps import IdempotencyDep, services
from easel.api.errors import Handler
from easel.api.forms import CHUNK, parse_form
from easel.domain.errors import Conflict, Unprocessable, ValidationFailed

HEADER = "idempotency-key"


class Replay(Exception):
    """Raised to answer with the stored first response."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(frozen=True)
class Claim:
    project_id: str
    key: str
    route: str


async def request_fingerprint(request: Request) -> str:
    """A hash of what the request asks for: JSON canonicalised, multipart by field values and file bytes."""
    h = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await parse_form(request)
        for name, value in sorted(form.multi_items(), key=lambda kv: kv[0]):
            h.update(name.encode() + b"\0")
            if isinstance(value, UploadFile):
                file_hash = hashlib.sha256()
                while chunk := await value.read(CHUNK):
                    file_hash.update(chunk)
                h.update(file_hash.digest())
                await value.seek(0)
            else:
                h.update(str(value).encode())
            h.update(b"\1")
    else:
        raw = await request.body()
        try:
            h.update(json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode())
        except ValueError:
            h.update(raw)
    return h.hexdigest()


async def idempotent(request: Request, idempotency: IdempotencyDep) -> None:
    key = request.headers.get(HEADER)
    if key is None:
        return
    if not 1 <= len(key) <= 255:
        raise ValidationFailed.for_field("Idempotency-Key", "must be 1 to 255 characters")
    project_id = request.state.principal.project_id  # set by the auth dependency, which runs first
    route = request.url.path
    fingerprint = await request_fingerprint(request)
    stored = await anyio.to_thread.run_sync(idempotency.begin, project_id, key, route, fingerprint)
    if stored is None:
        request.state.idempotency = Claim(project_id, key, route)
        return
    if stored.request_hash != fingerprint:
        raise Unprocessable(
            "This Idempotency-Key was used with a different request body", "idempotency_mismatch"
        )
    if stored.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still in progress", "idempotency_in_progress")
    replay = Response(stored.body or "", status_code=stored.status_code, headers=stored.headers)
    replay.headers["Idempotent-Replayed"] = "true"
    raise Replay(replay)


def settling(handler: Handler) -> Handler:
    """Replay a stored response; after the route, store a successful first response or forget the
    key of a failed one (an error response or an exception: it can be corrected and sent again)."""

    async def run(request: Request) -> Response:
        try:
            response = await handler(request)
        except Replay as replay:
            return replay.response
        except BaseException:
            await _finish(request, None)
            raise
        await _finish(request, response)
        return response

    return run


async def _finish(request: Request, response: Response | None) -> None:
    claim: Claim | None = getattr(request.state, "idempotency", None)
    if claim is None:
        return
    store = services(request).idempotency
    if (
        response is not None
        and 200 <= response.status_code < 300
        and not isinstance(response, StreamingResponse)
    ):
        body = bytes(response.body).decode()
        headers = {"content-type": response.headers.get("content-type", "application/json")}
        status = response.status_code
        await anyio.to_thread.run_sync(
            lambda: store.finish(claim.project_id, claim.key, claim.route, status, body, headers)
        )
    else:
        await anyio.to_thread.run_sync(store.abandon, claim.project_id, claim.key, claim.route)
