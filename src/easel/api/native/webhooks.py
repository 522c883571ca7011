"""Webhook routes of the native API: endpoints (admin), the request-webhook secret (admin), and the
delivery log with redelivery (a project's own messages). docs/webhooks.md describes them."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import Field

from easel.api.deps import WebhooksDep
from easel.api.native.common import Admin, GenRead, GenWrite, PageParams, native_router, page
from easel.api.native.protocol import endpoint_json, message_json, secret_json
from easel.api.wire import CamelWire
from easel.domain.urls import MAX_URL_LENGTH

router = native_router("/api/v1/webhooks", "webhooks")


class CreateEndpoint(CamelWire):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    event_types: list[str] = Field(default_factory=list)  # [] = every event
    description: str | None = Field(None, max_length=200)


class UpdateEndpoint(CamelWire):
    enabled: bool | None = None
    event_types: list[str] | None = None
    description: str | None = Field(None, max_length=200)


# -- endpoints ---------------------------------------------------------------------------------------


@router.post("/endpoints", status_code=201)
async def create_endpoint(body: CreateEndpoint, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """A project endpoint: every matching event of the project is POSTed to it. The secret is shown
    here and on rotation only."""
    ep = await anyio.to_thread.run_sync(
        lambda: webhooks.create_endpoint(caller.project_id, body.url, body.event_types, body.description)
    )
    return {"success": True, "data": endpoint_json(ep, with_secret=True)}


@router.get("/endpoints")
async def list_endpoints(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    eps = await anyio.to_thread.run_sync(webhooks.endpoints, caller.project_id)
    return {"success": True, "data": [endpoint_json(e) for e in eps]}


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    ep = await anyio.to_thread.run_sync(webhooks.endpoint, caller.project_id, endpoint_id)
    return {"success": True, "data": endpoint_json(ep)}


@router.patch("/endpoints/{endpoint_id}")
async def update_endpoint(
    endpoint_id: str, body: UpdateEndpoint, webhooks: WebhooksDep, caller: Admin
) -> dict[str, Any]:
    """Enable (after a 410 disabled it) or disable an endpoint; change its event filter."""
    ep = await anyio.to_thread.run_sync(
        lambda: webhooks.update_endpoint(
            caller.project_id,
            endpoint_id,
            enabled=body.enabled,
            event_types=body.event_types,
            description=body.description,
        )
    )
    return {"success": True, "data": endpoint_json(ep)}


@router.delete("/endpoints/{endpoint_id}")
async def delete_endpoint(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    await anyio.to_thread.run_sync(webhooks.delete_endpoint, caller.project_id, endpoint_id)
    return {"success": True, "message": "Webhook endpoint deleted"}


@router.post("/endpoints/{endpoint_id}/rotate-secret")
async def rotate_endpoint_secret(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """A new secret; the old one still signs (a second signature) for the grace period."""
    ep = await anyio.to_thread.run_sync(webhooks.rotate_endpoint_secret, caller.project_id, endpoint_id)
    return {"success": True, "data": endpoint_json(ep, with_secret=True)}


# -- the secret of per-request webhook URLs --------------------------------------------------------------


@router.get("/secret")
async def request_secret(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """The secret that signs this project's per-request webhooks (the `webhook` field of a request)."""
    found = await anyio.to_thread.run_sync(webhooks.project_secret, caller.project_id)
    return {"success": True, "data": secret_json(*found)}


@router.post("/secret/rotate")
async def rotate_request_secret(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    found = await anyio.to_thread.run_sync(webhooks.rotate_project_secret, caller.project_id)
    return {"success": True, "data": secret_json(*found)}


# -- the delivery log --------------------------------------------------------------------------------


@router.get("/messages")
async def list_messages(
    webhooks: WebhooksDep,
    caller: GenRead,
    paging: PageParams,
    generation_id: Annotated[str | None, Query(alias="generationId")] = None,
    endpoint_id: Annotated[str | None, Query(alias="endpointId")] = None,
    status: str | None = None,
) -> JSONResponse:
    found = await anyio.to_thread.run_sync(
        lambda: webhooks.messages(
            caller.project_id,
            generation_id=generation_id,
            endpoint_id=endpoint_id,
            status=status,
            page=paging.request,
        )
    )
    return page([message_json(m) for m in found.items], paging.request, found)


@router.get("/messages/{message_id}")
async def get_message(message_id: str, webhooks: WebhooksDep, caller: GenRead) -> dict[str, Any]:
    msg = await anyio.to_thread.run_sync(webhooks.message, caller.project_id, message_id)
    return {"success": True, "data": message_json(msg, detail=True)}


@router.post("/messages/{message_id}/redeliver", status_code=202)
async def redeliver(message_id: str, webhooks: WebhooksDep, caller: GenWrite) -> dict[str, Any]:
    """Send the message again now: same webhook-id, same body, a fresh timestamp and signature."""
    msg = await anyio.to_thread.run_sync(webhooks.redeliver, caller.project_id, message_id)
    return {"success": True, "data": message_json(msg, detail=True)}
