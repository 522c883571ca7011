"""Typed dependencies shared by every dialect's routes: the services (from easel.service.container) and
the caller's `Principal`, each dialect reading the key from where its clients send it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Request

from easel.domain.generation import ImageFile
from easel.domain.keys import SCOPES, Principal
from easel.service.admin import AdminService
from easel.service.container import Services
from easel.service.events import EventHub
from easel.service.gateway import GatewayService
from easel.service.generations import GenerationService
from easel.service.idempotency import Idempotency
from easel.service.library import LibraryService
from easel.service.links import LinkService
from easel.service.metrics import MetricsService
from easel.service.models import ModelAdminService
from easel.service.webhooks import WebhookService
from easel.settings import Settings


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


# Dependencies that do no I/O are coroutines: FastAPI runs a plain function dependency in its thread
# pool, a hop per dependency per request that costs more CPU than the lookup itself.
async def _services_dependency(request: Request) -> Services:
    return services(request)


ServicesDep = Annotated[Services, Depends(_services_dependency)]


def _member(name: str) -> Callable[[Request], Any]:
    async def dependency(request: Request) -> Any:
        return getattr(services(request), name)

    dependency.__name__ = f"{name}_service"
    return dependency


GenerationsDep = Annotated[GenerationService, Depends(_member("generations"))]
LibraryDep = Annotated[LibraryService, Depends(_member("library"))]
LinksDep = Annotated[LinkService, Depends(_member("links"))]
AdminDep = Annotated[AdminService, Depends(_member("admin"))]
WebhooksDep = Annotated[WebhookService, Depends(_member("webhooks"))]
IdempotencyDep = Annotated[Idempotency, Depends(_member("idempotency"))]
EventsDep = Annotated[EventHub, Depends(_member("events"))]
MetricsDep = Annotated[MetricsService, Depends(_member("metrics"))]
ModelsDep = Annotated[ModelAdminService, Depends(_member("models"))]
GatewayDep = Annotated[GatewayService, Depends(_member("gateway"))]
SettingsDep = Annotated[Settings, Depends(_member("settings"))]


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


def authenticated(extract: CredentialExtractor, scope: str | None) -> Callable[..., Principal]:
    """A dependency giving the request's `Principal`, from the dialect's credential.

    Verifies the key (401), its scope (403) and its rate limit (429 with Retry-After); the rate-limit
    headers are added to every response by the dialect's route class (api/errors.py), errors included.
    """
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")

    def dependency(request: Request, svc: ServicesDep) -> Principal:
        principal, decision = svc.access.authorize(extract(request), scope)
        if decision is not None:
            request.state.rate_headers = decision.headers()
        request.state.principal = principal
        return principal

    dependency.__name__ = f"authenticated_{(scope or 'any').replace(':', '_')}"
    return dependency


def image_links(request: Request, links: LinkService, images: Iterable[ImageFile]) -> Callable[[str], str]:
    """`url_for(image_id)` for a dialect's response builder: a link to each of these images."""
    by_id: dict[str, str | ImageFile] = {img.id: img for img in images}
    base = str(request.base_url)
    return lambda image_id: links.image_url(base, by_id.get(image_id, image_id))


def image_url(request: Request, links: LinkService, image: str | ImageFile, ttl: int | None = None) -> str:
    return links.image_url(str(request.base_url), image, ttl)
