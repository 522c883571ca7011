"""The media library of the native API: folders, images by folder, move, delete.

Uploaded and generated images live side by side: an image's `folder` is set by the upload (`folder`
form field), by the generation that made it (`folder`; the Wix dialect files its results in
"Social Marketing AI Media"), or by a move. Every route sees only the caller's project (404 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from easel.api.deps import RuntimeDep, authenticated, bearer_or_api_key, image_url
from easel.api.errors import dialect_route
from easel.api.native.protocol import image_json
from easel.api.native.router import render_error
from easel.domain.generation import Image
from easel.runtime import Runtime

router = APIRouter(prefix="/api/v1", route_class=dialect_route(render_error), tags=["native"])

ImagesRead = Annotated[str, Depends(authenticated(bearer_or_api_key, "images:read"))]
ImagesWrite = Annotated[str, Depends(authenticated(bearer_or_api_key, "images:write"))]
ImagesDelete = Annotated[str, Depends(authenticated(bearer_or_api_key, "images:delete"))]


class MoveImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(min_length=1, max_length=200)  # null: out of every folder


def _image(request: Request, runtime: Runtime, img: Image) -> dict[str, Any]:
    body = image_json(img, image_url(request, runtime, img.id))
    body["source"] = "generated" if img.generation_id else "uploaded"
    return body


@router.get("/folders")
async def list_folders(runtime: RuntimeDep, project: ImagesRead) -> dict[str, Any]:
    """The project's folders with their image counts, by name; `name: null` counts unfiled images."""
    found = await anyio.to_thread.run_sync(runtime.generations.folders, project)
    return {"success": True, "data": [{"name": name, "imageCount": count} for name, count in found]}


@router.get("/images")
async def list_images(
    request: Request,
    runtime: RuntimeDep,
    project: ImagesRead,
    folder: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Images newest first: all of them, those in `folder`, or with `folder=` (empty) the unfiled ones."""
    imgs, total = await anyio.to_thread.run_sync(
        lambda: runtime.generations.list_images(
            project, folder=folder or None, any_folder=folder is None, limit=limit, offset=offset
        )
    )
    return {
        "success": True,
        "data": [_image(request, runtime, i) for i in imgs],
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": total,
            "hasMore": offset + len(imgs) < total,
        },
    }


@router.patch("/images/{image_id}")
async def move_image(
    image_id: str, body: MoveImage, request: Request, runtime: RuntimeDep, project: ImagesWrite
) -> dict[str, Any]:
    img = await anyio.to_thread.run_sync(runtime.generations.move_image, project, image_id, body.folder)
    return {"success": True, "data": _image(request, runtime, img)}


@router.delete("/images/{image_id}")
async def delete_image(image_id: str, runtime: RuntimeDep, project: ImagesDelete) -> dict[str, Any]:
    await anyio.to_thread.run_sync(runtime.generations.delete_image, project, image_id)
    return {"success": True, "message": "Image deleted"}
