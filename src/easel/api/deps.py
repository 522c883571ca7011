"""Typed dependencies shared by every dialect's routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

import anyio
from fastapi import Depends, Request

from easel.domain.errors import NotFound, RateLimited
from easel.domain.generation import Generation, ImageFile
from easel.domain.keys import SCOPES
from easel.runtime import Runtime
from easel.service.auth import Caller


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


# How a dialect's clients send their key: each dialect picks its extractor (Bearer, X-API-Key, a raw
# Authorization header, X-Client-Authorization) and every extractor maps onto the same API keys.
CredentialExtractor = Callable[[Request], str | None]


def bearer_or_api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def raw_header(name: str) -> CredentialExtractor:
    """The whole value of header `name` is the key (a leading `Bearer ` is tolerated)."""

    def extract(request: Request) -> str | None:
        value = request.headers.get(name, "").strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        return value or None

    return extract


def authenticated(extract: CredentialExtractor, scope: str) -> Callable[..., str]:
    """A dependency giving the project a request acts for, from the dialect's credential.

    Verifies the key (401), its scope (403) and its rate limit (429 with Retry-After); the rate-limit
    headers are added to the response by the dialect's route class (api/errors.py), errors included.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")

    def dependency(request: Request, runtime: RuntimeDep) -> str:
        principal = runtime.principal_for(extract(request))
        principal.require(scope)
        decision = runtime.rate_limit(principal)
        if decision is not None:
            request.state.rate_headers = decision.headers()
            if not decision.allowed:
                raise RateLimited(
                    f"Rate limit of {decision.limit} requests per {decision.window_seconds} s exceeded; "
                    f"retry in {decision.reset_seconds} s",
                    retry_after=decision.reset_seconds,
                )
        request.state.principal = principal
        return Caller(principal)

    dependency.__name__ = f"authenticated_{scope.replace(':', '_')}"
    return dependency


async def generation_as(runtime: Runtime, project: str, gid: str, what: str) -> Generation:
    """A generation of this project; a 404 that names it as the dialect does (`job`, `execution`)."""
    try:
        return await anyio.to_thread.run_sync(runtime.generations.get, project, gid)
    except NotFound:
        raise NotFound(what, gid) from None


def base_url(request: Request, runtime: Runtime) -> str:
    """The public base URL for links: configured, else the one the client used."""
    return (runtime.settings.public_url or str(request.base_url)).rstrip("/")


def image_url(request: Request, runtime: Runtime, image: str | ImageFile, ttl: int | None = None) -> str:
    """An expiring link to an image's bytes: the store's own when it has one (a presigned S3 URL; needs
    the image record for its storage key), else Easel's signed `/api/v1/images/{id}/file` link."""
    if not isinstance(image, str):
        direct = runtime.blobs.public_url(image.storage_key, ttl if ttl is not None else runtime.signer.ttl)
        if direct is not None:
            return direct
        image = image.id
    return f"{base_url(request, runtime)}/api/v1/images/{image}/file?{runtime.signer.query(image, ttl)}"


def image_links(request: Request, runtime: Runtime, images: Iterable[ImageFile]) -> Callable[[str], str]:
    """`url_for(image_id)` for a dialect's response builder: image_url of each of these images."""
    by_id: dict[str, str | ImageFile] = {img.id: img for img in images}
    return lambda image_id: image_url(request, runtime, by_id.get(image_id, image_id))
