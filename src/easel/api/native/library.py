"""The media library of the native API: folders, images by folder, move, delete.

Uploaded and generated images live side by side: an image's `folder` is set by the upload (`folder`
form field), by the generation that made it (`folder`; the Wix dialect files its results in
"Social Marketing AI Media"), or by a move. Every route sees only the caller's project (404 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import Field

from easel.api.deps import LibraryDep, LinksDep, ServicesDep, image_url
from easel.api.forms import form_limits, read_upload
from easel.api.limits import max_body, multipart_max_bytes
from easel.api.native.common import ImagesDelete, ImagesRead, ImagesWrite, PageParams, native_router, page
from easel.api.native.protocol import image_json
from easel.api.wire import MAX_EXPIRES, StrictWire
from easel.domain.errors import Forbidden
from easel.domain.generation import Image
from easel.service.library import ImageGone
from easel.service.links import LinkService

router = native_router()


class MoveImage(StrictWire):
    folder: str | None = Field(min_length=1, max_length=200)  # null: out of every folder


def _image(request: Request, links: LinkService, img: Image, *, presign: bool = False) -> dict[str, Any]:
    """An image as the native API shows it; `presign`: its link may be the store's own (from the record)."""
    body = image_json(img, image_url(request, links, img if presign else img.id))
    body["source"] = "generated" if img.generation_id else "uploaded"
    return body


@router.post(
    "/images", status_code=201, openapi_extra=max_body(multipart_max_bytes(1)), form_limits=form_limits(1, 10)
)
async def upload_image(
    request: Request,
    library: LibraryDep,
    links: LinksDep,
    principal: ImagesWrite,
    file: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
    folder: Annotated[str | None, Form(max_length=200)] = None,
) -> dict[str, Any]:
    data = await read_upload("file", file)
    img = await anyio.to_thread.run_sync(
        lambda: library.upload(principal.project_id, data, folder=folder, field="file")
    )
    return {"success": True, "data": image_json(img, image_url(request, links, img))}


@router.get("/images/{image_id}")
async def get_image(
    image_id: str, request: Request, library: LibraryDep, links: LinksDep, principal: ImagesRead
) -> dict[str, Any]:
    img = await anyio.to_thread.run_sync(library.get, principal.project_id, image_id)
    return {"success": True, "data": _image(request, links, img, presign=True)}


_IMAGE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image bytes",
        "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    }
}


@router.get("/images/{image_id}/file", response_class=Response, responses=_IMAGE_BYTES)
async def image_file(
    image_id: str,
    library: LibraryDep,
    links: LinksDep,
    expires: Annotated[int, Query(ge=0, le=MAX_EXPIRES)] = 0,
    signature: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """The image bytes. The signed link is the credential, so browsers and <img> tags can use it."""
    if not links.verify(image_id, expires, signature):
        raise Forbidden("This image link is invalid or has expired")
    img = await anyio.to_thread.run_sync(library.get, None, image_id)
    try:
        data = await anyio.to_thread.run_sync(library.data, img)
    except ImageGone:
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


@router.get("/folders")
async def list_folders(library: LibraryDep, principal: ImagesRead) -> dict[str, Any]:
    """The project's folders with their image counts, by name; `name: null` counts unfiled images."""
    found = await anyio.to_thread.run_sync(library.folders, principal.project_id)
    return {"success": True, "data": [{"name": name, "imageCount": count} for name, count in found]}


@router.delete("/folders/{name:path}")
async def delete_folder(name: str, library: LibraryDep, principal: ImagesWrite) -> dict[str, Any]:
    """Delete a folder: its images are unfiled (kept, in no folder); 404 when it holds none."""
    moved = await anyio.to_thread.run_sync(library.delete_folder, principal.project_id, name)
    return {"success": True, "data": {"name": name, "unfiled": moved}}


@router.get("/images")
async def list_images(
    request: Request,
    library: LibraryDep,
    links: LinksDep,
    principal: ImagesRead,
    svc: ServicesDep,
    paging: PageParams,
    folder: Annotated[str | None, Query(max_length=200)] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    """Images newest first: all of them, those in `folder`, or with `folder=` (empty) the unfiled ones;
    `model` (a name or alias) keeps those its generations made."""
    canonical = svc.catalog.resolve(model).name if model is not None else None
    found = await anyio.to_thread.run_sync(
        lambda: library.list(
            principal.project_id,
            folder=folder or None,
            any_folder=folder is None,
            page=paging.request,
            model=canonical,
        )
    )
    return page([_image(request, links, i) for i in found.items], paging.request, found)


@router.patch("/images/{image_id}")
async def move_image(
    image_id: str,
    body: MoveImage,
    request: Request,
    library: LibraryDep,
    links: LinksDep,
    principal: ImagesWrite,
) -> dict[str, Any]:
    img = await anyio.to_thread.run_sync(library.move, principal.project_id, image_id, body.folder)
    return {"success": True, "data": _image(request, links, img)}


@router.delete("/images/{image_id}")
async def delete_image(image_id: str, library: LibraryDep, principal: ImagesDelete) -> dict[str, Any]:
    await anyio.to_thread.run_sync(library.delete, principal.project_id, image_id)
    return {"success": True, "message": "Image deleted"}
