"""Admin and usage routes of the native API: projects, keys, usage report.

An admin key manages its own project's keys; an admin key of the `local` project (the server owner,
created on first start) manages every project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from easel.api.deps import RuntimeDep, authenticated, bearer_or_api_key
from easel.api.errors import dialect_route
from easel.api.native.router import render_error
from easel.domain.errors import Forbidden, NotFound, ValidationFailed
from easel.domain.keys import DEFAULT_SCOPES, SCOPES
from easel.runtime import Runtime
from easel.store.keys import ProjectInfo

router = APIRouter(prefix="/api/v1", route_class=dialect_route(render_error), tags=["admin"])

Admin = Annotated[str, Depends(authenticated(bearer_or_api_key, "admin"))]
UsageRead = Annotated[str, Depends(authenticated(bearer_or_api_key, "usage:read"))]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateProject(_Wire):
    name: str = Field(min_length=1, max_length=200)
    budget_credits: float | None = Field(None, ge=0)
    rate_limit_per_hour: int | None = Field(None, ge=0)


class UpdateProject(_Wire):
    budget_credits: float | None = Field(None, ge=0)
    rate_limit_per_hour: int | None = Field(None, ge=0)
    record_parameters: bool | None = None  # None: unchanged


class CreateKey(_Wire):
    name: str = Field("key", min_length=1, max_length=200)
    project_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    expires_at: datetime | None = None
    rate_limit_per_hour: int | None = Field(None, ge=0)
    budget_credits: float | None = Field(None, ge=0)


def _project_json(p: ProjectInfo) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "budgetCredits": p.budget_credits,
        "rateLimitPerHour": p.rate_limit_per_hour,
        "recordParameters": p.record_parameters,
    }


def _may_manage(runtime: Runtime, caller: str, project_id: str) -> None:
    """Server admins (admins of the local project) manage every project; others only their own."""
    if caller != project_id and caller != runtime.default_project_id:
        raise NotFound("project", project_id)


@router.post("/admin/projects", status_code=201)
async def create_project(body: CreateProject, runtime: RuntimeDep, caller: Admin) -> dict[str, Any]:
    if caller != runtime.default_project_id:
        raise Forbidden("Only the server's admin (the local project) creates projects")

    def make() -> ProjectInfo:
        pid = runtime.repo.ensure_project(body.name)
        return runtime.keys.set_project_limits(
            pid, budget_credits=body.budget_credits, rate_limit_per_hour=body.rate_limit_per_hour
        )

    return {"success": True, "data": _project_json(await anyio.to_thread.run_sync(make))}


@router.get("/admin/projects")
async def list_projects(runtime: RuntimeDep, caller: Admin) -> dict[str, Any]:
    projects = await anyio.to_thread.run_sync(runtime.keys.list_projects)
    visible = [p for p in projects if caller in (runtime.default_project_id, p.id)]
    return {"success": True, "data": [_project_json(p) for p in visible]}


@router.patch("/admin/projects/{project_id}")
async def update_project(
    project_id: str, body: UpdateProject, runtime: RuntimeDep, caller: Admin
) -> dict[str, Any]:
    _may_manage(runtime, caller, project_id)
    current = await anyio.to_thread.run_sync(runtime.keys.project, project_id)
    given = body.model_fields_set  # PATCH: fields not sent keep their values
    info = await anyio.to_thread.run_sync(
        lambda: runtime.keys.set_project_limits(
            project_id,
            budget_credits=body.budget_credits if "budget_credits" in given else current.budget_credits,
            rate_limit_per_hour=(
                body.rate_limit_per_hour if "rate_limit_per_hour" in given else current.rate_limit_per_hour
            ),
            record_parameters=body.record_parameters,
        )
    )
    return {"success": True, "data": _project_json(info)}


@router.post("/admin/keys", status_code=201)
async def create_key(body: CreateKey, runtime: RuntimeDep, caller: Admin) -> dict[str, Any]:
    project_id = body.project_id or str(caller)
    _may_manage(runtime, caller, project_id)
    unknown = [s for s in body.scopes if s not in SCOPES]
    if unknown or not body.scopes:
        raise ValidationFailed.for_field("scopes", f"unknown scopes {unknown}; allowed: {', '.join(SCOPES)}")
    await anyio.to_thread.run_sync(runtime.keys.project, project_id)
    plaintext, info = await anyio.to_thread.run_sync(
        lambda: runtime.keys.create(
            project_id,
            body.name,
            body.scopes,
            expires_at=body.expires_at,
            rate_limit_per_hour=body.rate_limit_per_hour,
            budget_credits=body.budget_credits,
        )
    )
    return {"success": True, "data": info.public() | {"key": plaintext}}


@router.get("/admin/keys")
async def list_keys(
    runtime: RuntimeDep, caller: Admin, project_id: Annotated[str | None, Query(alias="projectId")] = None
) -> dict[str, Any]:
    target = project_id or str(caller)
    _may_manage(runtime, caller, target)
    keys = await anyio.to_thread.run_sync(runtime.keys.all, target)
    return {"success": True, "data": [k.public() for k in keys]}


@router.delete("/admin/keys/{key_id}")
async def revoke_key(key_id: str, runtime: RuntimeDep, caller: Admin) -> dict[str, Any]:
    info = await anyio.to_thread.run_sync(runtime.keys.get, key_id)
    _may_manage(runtime, caller, info.project_id)
    revoked = await anyio.to_thread.run_sync(runtime.keys.revoke, key_id)
    return {"success": True, "data": revoked.public()}


@router.get("/usage")
async def usage(
    runtime: RuntimeDep,
    project: UsageRead,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
    period: Literal["hour", "day", "month"] = "day",
) -> dict[str, Any]:
    """Credits and images by model and period, over queued, running and succeeded generations."""
    rows = await anyio.to_thread.run_sync(runtime.repo.usage, str(project), since, until, period)
    info = await anyio.to_thread.run_sync(runtime.keys.project, str(project))
    by_model: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = by_model.setdefault(
            r["model"], {"model": r["model"], "generations": 0, "images": 0, "credits": 0.0}
        )
        for k in ("generations", "images"):
            m[k] += r[k]
        m["credits"] = round(m["credits"] + r["credits"], 6)
    totals = {k: sum(m[k] for m in by_model.values()) for k in ("generations", "images")}
    totals["credits"] = round(sum(m["credits"] for m in by_model.values()), 6)
    budget = None
    if info.budget_credits is not None:
        all_rows = await anyio.to_thread.run_sync(runtime.repo.usage, str(project), None, None, "month")
        spent = round(sum(r["credits"] for r in all_rows), 6)
        budget = {
            "credits": info.budget_credits,
            "spent": spent,
            "remaining": max(0.0, info.budget_credits - spent),
        }
    return {
        "success": True,
        "data": {
            "period": period,
            "totals": totals,
            "byModel": list(by_model.values()),
            "byPeriod": rows,
            "budget": budget,
        },
    }
