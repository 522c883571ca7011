"""Routes of the native API. Thin: parse, call GenerationService, shape the answer."""

from __future__ import annotations

import re
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from easel.api.deps import RuntimeDep, authenticated, bearer_or_api_key, image_links, image_url
from easel.api.errors import dialect_route
from easel.api.idempotency import idempotent
from easel.api.native.protocol import (
    STATUS_BY_NAME,
    WIRE_NAMES,
    CreateGenerationRequest,
    generation_json,
    image_json,
)
from easel.domain.errors import EaselError, Forbidden, ValidationFailed
from easel.domain.generation import Generation, ListQuery, Status
from easel.runtime import Runtime
from easel.storage.base import BlobNotFound


def render_error(err: EaselError) -> Response:
    fields = [{"field": f.field, "message": f.message} for f in err.fields]
    body = {"success": False, "error": {"code": err.code.upper(), "message": err.message, "fields": fields}}
    return JSONResponse(body, status_code=err.status)


router = APIRouter(prefix="/api/v1", route_class=dialect_route(render_error), tags=["native"])

GenWrite = Annotated[str, Depends(authenticated(bearer_or_api_key, "generations:write"))]
GenRead = Annotated[str, Depends(authenticated(bearer_or_api_key, "generations:read"))]
ImagesRead = Annotated[str, Depends(authenticated(bearer_or_api_key, "images:read"))]
ImagesWrite = Annotated[str, Depends(authenticated(bearer_or_api_key, "images:write"))]

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _gen(request: Request, runtime: Runtime, gen: Generation) -> dict[str, Any]:
    return generation_json(gen, image_links(request, runtime, gen.images), gen.project_id)


@router.post("/generations", status_code=201)
async def create_generation(
    body: CreateGenerationRequest,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    project: GenWrite,
    _idempotent: Annotated[None, Depends(idempotent)],
    prefer: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    svc = runtime.generations

    def create() -> Generation:
        spec = body.to_spec()
        urls = {"sourceImageUrl": body.source_image_url, "maskImageUrl": body.mask_image_url}
        if any(urls.values()):
            # Validate everything else first, so a bad request fetches nothing.
            placeholder = spec.model_copy(
                update={
                    "source_image_ids": spec.source_image_ids or ["pending"],
                    "mask_image_id": spec.mask_image_id or ("pending" if body.mask_image_url else None),
                }
            )
            placeholder.resolve(runtime.catalog, WIRE_NAMES)
            imported = {f: svc.import_image_url(project, u, field=f).id for f, u in urls.items() if u}
            spec = spec.model_copy(
                update={
                    "source_image_ids": [imported["sourceImageUrl"]]
                    if "sourceImageUrl" in imported
                    else spec.source_image_ids,
                    "mask_image_id": imported.get("maskImageUrl", spec.mask_image_id),
                }
            )
        return svc.create(project, spec, WIRE_NAMES)

    gen = await anyio.to_thread.run_sync(create)
    match = _WAIT.search(prefer or "")
    if match:
        wait = float(match.group(1))
        gen = await svc.wait(project, gen.id, wait)
        response.headers["Preference-Applied"] = f"wait={match.group(1)}"
    return {"success": True, "data": _gen(request, runtime, gen)}


@router.get("/generations")
async def list_generations(
    request: Request,
    runtime: RuntimeDep,
    project: GenRead,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> dict[str, Any]:
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
    gens, total = await anyio.to_thread.run_sync(
        runtime.generations.list, project, ListQuery(tuple(statuses), limit, offset, include_deleted)
    )
    return {
        "success": True,
        "data": [_gen(request, runtime, g) for g in gens],
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": total,
            "hasMore": offset + len(gens) < total,
        },
    }


@router.get("/generations/{generation_id}")
async def get_generation(
    generation_id: str, request: Request, runtime: RuntimeDep, project: GenRead
) -> dict[str, Any]:
    gen = await anyio.to_thread.run_sync(runtime.generations.get, project, generation_id)
    return {"success": True, "data": _gen(request, runtime, gen)}


@router.delete("/generations/{generation_id}")
async def delete_generation(generation_id: str, runtime: RuntimeDep, project: GenWrite) -> dict[str, Any]:
    await anyio.to_thread.run_sync(runtime.generations.delete, project, generation_id)
    return {"success": True, "message": "Generation deleted"}


@router.post("/generations/{generation_id}/cancel")
async def cancel_generation(
    generation_id: str, request: Request, runtime: RuntimeDep, project: GenWrite
) -> dict[str, Any]:
    gen = await anyio.to_thread.run_sync(runtime.generations.cancel, project, generation_id)
    return {"success": True, "data": _gen(request, runtime, gen)}


@router.post("/images", status_code=201)
async def upload_image(
    request: Request,
    runtime: RuntimeDep,
    project: ImagesWrite,
    file: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
    folder: Annotated[str | None, Form(max_length=200)] = None,
) -> dict[str, Any]:
    data = await file.read()
    img = await anyio.to_thread.run_sync(
        lambda: runtime.generations.upload_image(project, data, folder=folder, field="file")
    )
    return {"success": True, "data": image_json(img, image_url(request, runtime, img))}


@router.get("/images/{image_id}")
async def get_image(
    image_id: str, request: Request, runtime: RuntimeDep, project: ImagesRead
) -> dict[str, Any]:
    img = await anyio.to_thread.run_sync(runtime.generations.get_image, project, image_id)
    return {"success": True, "data": image_json(img, image_url(request, runtime, img))}


@router.get("/images/{image_id}/file")
async def image_file(image_id: str, runtime: RuntimeDep, expires: int = 0, signature: str = "") -> Response:
    """The image bytes. The signed link is the credential, so browsers and <img> tags can use it."""
    if not runtime.signer.verify(image_id, expires, signature):
        raise Forbidden("This image link is invalid or has expired")
    img = await anyio.to_thread.run_sync(runtime.generations.get_image, None, image_id)
    try:
        data = await anyio.to_thread.run_sync(runtime.generations.image_bytes, img)
    except BlobNotFound:
        raise Forbidden("This image is no longer available") from None
    return Response(
        data,
        media_type=img.mime,
        headers={
            "Cache-Control": "private, max-age=3600",
            "ETag": f'"{img.sha256}"',
            "Content-Disposition": f'inline; filename="{img.id}.{img.mime.split("/")[1]}"',
        },
    )


@router.get("/models")
async def list_models(runtime: RuntimeDep, _project: GenRead) -> dict[str, Any]:
    cat = runtime.catalog
    return {"success": True, "data": [cat.describe(m) for m in cat.models.values()]}


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    return await health(runtime)


async def health(runtime: Runtime) -> dict[str, Any]:
    from sqlalchemy import text

    def ping() -> None:
        with runtime.repo.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    await anyio.to_thread.run_sync(ping)
    return {"status": "ok", "database": runtime.repo.engine.dialect.name}
