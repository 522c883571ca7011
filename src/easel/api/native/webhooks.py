"""Webhook routes of the native API: endpoints (admin), the request-webhook secret (admin), and the
delivery log with redelivery (a project's own messages). docs/webhooks.md describes them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from easel.api.deps import WebhooksDep
from easel.api.native.common import Admin, GenRead, GenWrite, native_router, page
from easel.api.wire import iso
from easel.domain.errors import ValidationFailed
from easel.domain.urls import MAX_URL_LENGTH
from easel.domain.webhooks import MESSAGE_STATES, Endpoint, Message

router = native_router("/api/v1/webhooks", "webhooks")


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateEndpoint(_Wire):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    event_types: list[str] = Field(default_factory=list)  # [] = every event
    description: str | None = Field(None, max_length=200)


class UpdateEndpoint(_Wire):
    enabled: bool | None = None
    event_types: list[str] | None = None
    description: str | None = Field(None, max_length=200)


def _endpoint_json(ep: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out = {
        "id": ep.id,
        "url": ep.url,
        "description": ep.description,
        "eventTypes": ep.event_types,
        "enabled": ep.enabled,
        "disabledReason": ep.disabled_reason,
        "previousSecretExpiresAt": iso(ep.previous_secret_expires_at),
        "createdAt": iso(ep.created_at),
        "updatedAt": iso(ep.updated_at),
    }
    if with_secret:
        out["secret"] = ep.secret
    return out


def _message_json(m: Message, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "eventType": m.event_type,
        "generationId": m.generation_id,
        "endpointId": m.endpoint_id,
        "url": m.url,
        "status": m.status,
        "attempts": m.attempts,
        "maxAttempts": m.max_attempts,
        "nextAttemptAt": iso(m.next_attempt_at),
        "lastStatusCode": m.last_status_code,
        "lastError": m.last_error,
        "createdAt": iso(m.created_at),
        "deliveredAt": iso(m.delivered_at),
    }
    if detail:
        out["payload"] = json.loads(m.body)
        out["attemptLog"] = [
            {
                "attempt": a.attempt,
                "url": a.url,
                "startedAt": iso(a.started_at),
                "durationMs": a.duration_ms,
                "statusCode": a.status_code,
                "outcome": a.outcome,
                "error": a.error,
                "responseBody": a.response_body,
            }
            for a in m.attempt_log
        ]
    return out


def _secret_json(secret: str, previous: str | None, expires: datetime | None) -> dict[str, Any]:
    return {"secret": secret, "previousSecretExpiresAt": iso(expires) if previous else None}


# -- endpoints ---------------------------------------------------------------------------------------


@router.post("/endpoints", status_code=201)
async def create_endpoint(body: CreateEndpoint, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """A project endpoint: every matching event of the project is POSTed to it. The secret is shown
    here and on rotation only."""
    ep = await anyio.to_thread.run_sync(
        lambda: webhooks.create_endpoint(caller.project_id, body.url, body.event_types, body.description)
    )
    return {"success": True, "data": _endpoint_json(ep, with_secret=True)}


@router.get("/endpoints")
async def list_endpoints(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    eps = await anyio.to_thread.run_sync(webhooks.store.endpoints, caller.project_id)
    return {"success": True, "data": [_endpoint_json(e) for e in eps]}


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    ep = await anyio.to_thread.run_sync(webhooks.store.endpoint, caller.project_id, endpoint_id)
    return {"success": True, "data": _endpoint_json(ep)}


@router.patch("/endpoints/{endpoint_id}")
async def update_endpoint(
    endpoint_id: str, body: UpdateEndpoint, webhooks: WebhooksDep, caller: Admin
) -> dict[str, Any]:
    """Enable (after a 410 disabled it) or disable an endpoint; change its event filter."""
    svc = webhooks
    events = None if body.event_types is None else svc.check_events(body.event_types)
    ep = await anyio.to_thread.run_sync(
        lambda: svc.store.update_endpoint(
            caller.project_id,
            endpoint_id,
            enabled=body.enabled,
            event_types=events,
            description=body.description,
        )
    )
    return {"success": True, "data": _endpoint_json(ep)}


@router.delete("/endpoints/{endpoint_id}")
async def delete_endpoint(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    await anyio.to_thread.run_sync(webhooks.store.delete_endpoint, caller.project_id, endpoint_id)
    return {"success": True, "message": "Webhook endpoint deleted"}


@router.post("/endpoints/{endpoint_id}/rotate-secret")
async def rotate_endpoint_secret(endpoint_id: str, webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """A new secret; the old one still signs (a second signature) for the grace period."""
    ep = await anyio.to_thread.run_sync(webhooks.rotate_endpoint_secret, caller.project_id, endpoint_id)
    return {"success": True, "data": _endpoint_json(ep, with_secret=True)}


# -- the secret of per-request webhook URLs --------------------------------------------------------------


@router.get("/secret")
async def request_secret(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    """The secret that signs this project's per-request webhooks (the `webhook` field of a request)."""
    found = await anyio.to_thread.run_sync(webhooks.store.project_secret, caller.project_id)
    return {"success": True, "data": _secret_json(*found)}


@router.post("/secret/rotate")
async def rotate_request_secret(webhooks: WebhooksDep, caller: Admin) -> dict[str, Any]:
    found = await anyio.to_thread.run_sync(webhooks.rotate_project_secret, caller.project_id)
    return {"success": True, "data": _secret_json(*found)}


# -- the delivery log --------------------------------------------------------------------------------


@router.get("/messages")
async def list_messages(
    webhooks: WebhooksDep,
    caller: GenRead,
    generation_id: Annotated[str | None, Query(alias="generationId")] = None,
    endpoint_id: Annotated[str | None, Query(alias="endpointId")] = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if status is not None and status not in MESSAGE_STATES:
        raise ValidationFailed.for_field(
            "status", f"unknown status {status!r}; allowed: {', '.join(MESSAGE_STATES)}"
        )
    msgs, total = await anyio.to_thread.run_sync(
        lambda: webhooks.store.messages(
            caller.project_id,
            generation_id=generation_id,
            endpoint_id=endpoint_id,
            status=status,
            limit=limit,
            offset=offset,
        )
    )
    return page([_message_json(m) for m in msgs], limit, offset, total)


@router.get("/messages/{message_id}")
async def get_message(message_id: str, webhooks: WebhooksDep, caller: GenRead) -> dict[str, Any]:
    msg = await anyio.to_thread.run_sync(webhooks.store.message, caller.project_id, message_id)
    return {"success": True, "data": _message_json(msg, detail=True)}


@router.post("/messages/{message_id}/redeliver", status_code=202)
async def redeliver(message_id: str, webhooks: WebhooksDep, caller: GenWrite) -> dict[str, Any]:
    """Send the message again now: same webhook-id, same body, a fresh timestamp and signature."""
    msg = await anyio.to_thread.run_sync(webhooks.redeliver, caller.project_id, message_id)
    return {"success": True, "data": _message_json(msg, detail=True)}
