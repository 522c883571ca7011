"""Admin and usage routes of the native API: projects, keys, usage report, models.

An admin key manages its own project's keys; an admin key of the `local` project (the server owner,
created on first start) manages every project and alone sets budgets and rate limits (the rules are in
service/admin.py), and alone lists, loads and unloads models on the workers (service/models.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import Query
from pydantic import Field

from easel.api.deps import AdminDep, GatewayDep, ModelsDep
from easel.api.native.common import Admin, UsageRead, native_router
from easel.api.native.protocol import (
    circuit_json,
    key_json,
    model_request_json,
    models_overview_json,
    project_json,
    upstream_call_json,
)
from easel.api.wire import MAX_COUNT, MAX_CREDITS, CamelWire, DateTime
from easel.domain.keys import DEFAULT_SCOPES
from easel.domain.model_requests import ModelAction

router = native_router(tag="admin")


class CreateProject(CamelWire):
    name: str = Field(min_length=1, max_length=200)
    budget_credits: float | None = Field(None, ge=0, le=MAX_CREDITS)
    rate_limit_per_hour: int | None = Field(None, ge=0, le=MAX_COUNT)
    max_queued: int | None = Field(None, ge=0, le=MAX_COUNT)  # None: the server default; 0: no cap
    allow_high_priority: bool = False


class UpdateProject(CamelWire):
    budget_credits: float | None = Field(None, ge=0, le=MAX_CREDITS)
    rate_limit_per_hour: int | None = Field(None, ge=0, le=MAX_COUNT)
    record_parameters: bool | None = None  # None: unchanged
    max_queued: int | None = Field(None, ge=0, le=MAX_COUNT)  # null: the server default
    allow_high_priority: bool | None = None  # None: unchanged


class CreateKey(CamelWire):
    name: str = Field("key", min_length=1, max_length=200)
    project_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    expires_at: DateTime | None = Field(None, strict=False)
    rate_limit_per_hour: int | None = Field(None, ge=0, le=MAX_COUNT)
    budget_credits: float | None = Field(None, ge=0, le=MAX_CREDITS)
    max_queued: int | None = Field(None, ge=0, le=MAX_COUNT)  # None: the server default; 0: no cap


@router.post("/admin/projects", status_code=201)
async def create_project(body: CreateProject, admin: AdminDep, caller: Admin) -> dict[str, Any]:
    info = await anyio.to_thread.run_sync(
        lambda: admin.create_project(
            caller,
            body.name,
            body.budget_credits,
            body.rate_limit_per_hour,
            max_queued=body.max_queued,
            allow_high_priority=body.allow_high_priority,
        )
    )
    return {"success": True, "data": project_json(info)}


@router.get("/admin/projects")
async def list_projects(admin: AdminDep, caller: Admin) -> dict[str, Any]:
    projects = await anyio.to_thread.run_sync(admin.projects, caller)
    return {"success": True, "data": [project_json(p) for p in projects]}


@router.patch("/admin/projects/{project_id}")
async def update_project(
    project_id: str, body: UpdateProject, admin: AdminDep, caller: Admin
) -> dict[str, Any]:
    given = body.model_fields_set  # PATCH: fields not sent keep their values
    limits = ("budget_credits", "rate_limit_per_hour", "max_queued")
    changes = {k: getattr(body, k) for k in limits if k in given}
    info = await anyio.to_thread.run_sync(
        lambda: admin.update_project(
            caller,
            project_id,
            record_parameters=body.record_parameters,
            allow_high_priority=body.allow_high_priority,
            **changes,
        )
    )
    return {"success": True, "data": project_json(info)}


@router.post("/admin/keys", status_code=201)
async def create_key(body: CreateKey, admin: AdminDep, caller: Admin) -> dict[str, Any]:
    plaintext, info = await anyio.to_thread.run_sync(
        lambda: admin.create_key(
            caller,
            project_id=body.project_id,
            name=body.name,
            scopes=body.scopes,
            expires_at=body.expires_at,
            rate_limit_per_hour=body.rate_limit_per_hour,
            budget_credits=body.budget_credits,
            max_queued=body.max_queued,
        )
    )
    return {"success": True, "data": key_json(info) | {"key": plaintext}}


@router.get("/admin/keys")
async def list_keys(
    admin: AdminDep, caller: Admin, project_id: Annotated[str | None, Query(alias="projectId")] = None
) -> dict[str, Any]:
    keys = await anyio.to_thread.run_sync(admin.list_keys, caller, project_id)
    return {"success": True, "data": [key_json(k) for k in keys]}


@router.delete("/admin/keys/{key_id}")
async def revoke_key(key_id: str, admin: AdminDep, caller: Admin) -> dict[str, Any]:
    revoked = await anyio.to_thread.run_sync(admin.revoke_key, caller, key_id)
    return {"success": True, "data": key_json(revoked)}


@router.get("/admin/models")
async def list_models(models: ModelsDep, caller: Admin) -> dict[str, Any]:
    """Every catalog entry with its load state on each live worker that serves it, the live workers,
    the latest load / unload requests and the latest lost ones (server admin only)."""
    overview = await anyio.to_thread.run_sync(models.overview, caller)
    return {"success": True, "data": models_overview_json(overview)}


@router.post("/admin/models/{name}/load", status_code=202)
async def load_model(name: str, models: ModelsDep, caller: Admin) -> dict[str, Any]:
    """Ask every live worker serving the model to load it (one request each, performed between batches)."""
    made = await anyio.to_thread.run_sync(models.request, caller, name, ModelAction.LOAD)
    return {"success": True, "data": [model_request_json(r) for r in made]}


@router.post("/admin/models/{name}/unload", status_code=202)
async def unload_model(name: str, models: ModelsDep, caller: Admin) -> dict[str, Any]:
    """Ask every live worker serving the model to drop it and free its memory."""
    made = await anyio.to_thread.run_sync(models.request, caller, name, ModelAction.UNLOAD)
    return {"success": True, "data": [model_request_json(r) for r in made]}


@router.get("/admin/upstream/providers")
async def upstream_providers(gateway: GatewayDep, caller: Admin) -> dict[str, Any]:
    """The catalog's providers (the name of each one's key, never the key) with their circuits."""
    found = await anyio.to_thread.run_sync(gateway.providers, caller)
    return {"success": True, "data": [p | {"circuit": circuit_json(c)} for p, c in found]}


@router.get("/admin/upstream/calls")
async def upstream_calls(
    gateway: GatewayDep,
    caller: Admin,
    provider: Annotated[str | None, Query(max_length=100)] = None,
    status: Literal["ok", "failed", "rejected", "canceled", "skipped"] | None = None,
    since: Annotated[DateTime | None, Query(alias="from")] = None,
    until: Annotated[DateTime | None, Query(alias="to")] = None,
    generation_id: Annotated[str | None, Query(alias="generationId", max_length=36)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The call ledger, newest first: every call to a provider (its retries included), by cursor."""
    page = await anyio.to_thread.run_sync(
        lambda: gateway.calls(
            caller,
            provider=provider,
            status=status,
            since=since,
            until=until,
            generation_id=generation_id,
            cursor=cursor,
            limit=limit,
        )
    )
    return {
        "success": True,
        "data": [upstream_call_json(c) for c in page.items],
        "pagination": {
            "limit": limit,
            "hasMore": page.next_cursor is not None,
            "nextCursor": page.next_cursor,
        },
    }


@router.get("/admin/upstream/usage")
async def upstream_usage(
    gateway: GatewayDep,
    caller: Admin,
    since: Annotated[DateTime | None, Query(alias="from")] = None,
    until: Annotated[DateTime | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """The ledger summed per provider and day: calls by status, images, bytes, credits, retries, time."""
    days = await anyio.to_thread.run_sync(gateway.daily, caller, since, until)
    return {"success": True, "data": days}


@router.get("/usage")
async def usage(
    admin: AdminDep,
    principal: UsageRead,
    since: Annotated[DateTime | None, Query(alias="from")] = None,
    until: Annotated[DateTime | None, Query(alias="to")] = None,
    period: Literal["hour", "day", "month"] = "day",
) -> dict[str, Any]:
    """Credits and images by model and period, over queued, running and succeeded generations."""
    report = await anyio.to_thread.run_sync(admin.usage, principal.project_id, since, until, period)
    return {
        "success": True,
        "data": {
            "period": report.period,
            "totals": report.totals,
            "byModel": report.by_model,
            "byPeriod": report.by_period,
            "budget": report.budget,
        },
    }
