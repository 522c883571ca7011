"""Routes of the native API's generations: parse, call GenerationService, shape the answer."""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from easel.api.deps import GenerationsDep, LinksDep, ServicesDep
from easel.api.health import readiness
from easel.api.idempotency import idempotent
from easel.api.limits import JSON_MAX_BYTES, max_body
from easel.api.native.common import (
    AnyKey,
    GenRead,
    GenWrite,
    PageParams,
    generation_body,
    native_router,
    page,
)
from easel.api.native.protocol import STATUS_BY_NAME, CreateGenerationRequest
from easel.api.scheduling import SchedulingHeaders, scheduled
from easel.api.wire import iso
from easel.domain.errors import ValidationFailed
from easel.domain.generation import ListQuery, Status

router = native_router()

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@router.post("/generations", status_code=201, openapi_extra=max_body(JSON_MAX_BYTES))
async def create_generation(
    body: CreateGenerationRequest,
    request: Request,
    response: Response,
    generations: GenerationsDep,
    links: LinksDep,
    principal: GenWrite,
    _idempotent: Annotated[None, Depends(idempotent)],
    scheduling: SchedulingHeaders,
    prefer: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    spec = scheduled(body.to_spec(), scheduling, body.model_fields_set)  # the body's fields win
    match = _WAIT.search(prefer or "")
    submit = partial(generations.submit, principal, spec, body.inputs(), estimate=match is None)
    gen = await anyio.to_thread.run_sync(submit)
    if match:
        gen = await generations.wait(principal.project_id, gen.id, float(match.group(1)))
        response.headers["Preference-Applied"] = f"wait={match.group(1)}"
    return {"success": True, "data": generation_body(request, links, gen)}


@router.get("/generations")
async def list_generations(
    request: Request,
    generations: GenerationsDep,
    links: LinksDep,
    principal: GenRead,
    paging: PageParams,
    status: str | None = None,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> JSONResponse:
    statuses: list[Status] = []
    for name in (status or "").split(","):
        if not name.strip():
            continue
        if name.strip() not in STATUS_BY_NAME:
            raise ValidationFailed.for_field(
                "status",
                f"unknown status {name.strip()!r}; allowed: pending, processing, success, failed, canceled",
            )
        statuses.append(STATUS_BY_NAME[name.strip()])
    req = paging.request
    query = ListQuery(tuple(statuses), req.limit, req.offset, include_deleted, req.cursor, req.exact_total)
    found = await anyio.to_thread.run_sync(generations.list, principal.project_id, query)
    return page([generation_body(request, links, g) for g in found.items], req, found)


@router.get("/generations/{generation_id}")
async def get_generation(
    generation_id: str, request: Request, generations: GenerationsDep, links: LinksDep, principal: GenRead
) -> JSONResponse:
    gen = await anyio.to_thread.run_sync(generations.get, principal.project_id, generation_id)
    return JSONResponse({"success": True, "data": generation_body(request, links, gen)})


@router.get("/generations/{generation_id}/receipt")
async def get_receipt(generation_id: str, generations: GenerationsDep, principal: GenRead) -> JSONResponse:
    """The generation's reproducibility receipt (docs/provenance.md): the model and its weights' hash,
    LoRAs with theirs, the seed and every resolved parameter, library versions, each output's sha256.
    `easel replay` re-runs it. 404 until the job has succeeded on one of our workers."""
    receipt = await anyio.to_thread.run_sync(generations.receipt, principal.project_id, generation_id)
    return JSONResponse({"success": True, "data": receipt})


@router.delete("/generations/{generation_id}")
async def delete_generation(
    generation_id: str, generations: GenerationsDep, principal: GenWrite
) -> dict[str, Any]:
    await anyio.to_thread.run_sync(generations.delete, principal.project_id, generation_id)
    return {"success": True, "message": "Generation deleted"}


@router.post("/generations/{generation_id}/cancel")
async def cancel_generation(
    generation_id: str, request: Request, generations: GenerationsDep, links: LinksDep, principal: GenWrite
) -> dict[str, Any]:
    gen = await anyio.to_thread.run_sync(generations.cancel, principal.project_id, generation_id)
    return {"success": True, "data": generation_body(request, links, gen)}


@router.post("/generations/{generation_id}/retry")
async def retry_generation(
    generation_id: str,
    request: Request,
    generations: GenerationsDep,
    links: LinksDep,
    principal: GenWrite,
    _idempotent: Annotated[None, Depends(idempotent)],
) -> dict[str, Any]:
    """Queue a failed or canceled generation again: same id, spec and seed (the same picture)."""
    gen = await anyio.to_thread.run_sync(generations.retry, principal, generation_id)
    return {"success": True, "data": generation_body(request, links, gen)}


@router.get("/me")
async def who_am_i(svc: ServicesDep, principal: AnyKey) -> dict[str, Any]:
    """The calling key: its name, project, scopes and limits (any valid key; the console's sign-in)."""
    view = await anyio.to_thread.run_sync(svc.access.describe, principal)
    return {
        "success": True,
        "data": {
            "keyId": view.key_id,
            "keyName": view.key_name,
            "projectId": view.project_id,
            "projectName": view.project_name,
            "scopes": list(view.scopes),
            "rateLimitPerHour": view.rate_limit_per_hour,
            "budgetCredits": view.budget_credits,
            "expiresAt": iso(view.expires_at),
            "serverAdmin": view.server_admin,
            "authEnabled": view.auth_enabled,
        },
    }


@router.get("/models")
async def list_models(svc: ServicesDep, _principal: GenRead) -> dict[str, Any]:
    cat = svc.catalog
    return {"success": True, "data": [cat.describe(m) for m in cat.models.values()]}


@router.get(
    "/healthz",
    responses={
        200: {"description": "Ready: the database answers and the in-process worker (if any) runs"},
        503: {"description": "Not ready: the database does not answer or the in-process worker died"},
    },
)
async def healthz(request: Request) -> JSONResponse:
    """Readiness: `status` ok, or 503 `unavailable` when the database does not answer or this server's
    worker has died; `worker` is running, dead or none, `workers` the live workers fleet-wide."""
    return await readiness(request)
