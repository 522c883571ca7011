"""The one reader of form bodies (multipart/form-data and urlencoded) for every dialect."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from easel.api.limits import MAX_FILE_BYTES
from easel.domain.errors import PayloadTooLarge, ValidationFailed

MAX_FIELDS = 100
CHUNK = 1024 * 1024


def form_limits(max_files: int, max_fields: int = MAX_FIELDS) -> Any:
    """A route's `form_limits=`: how many files and text fields its form may have (FastAPI applies
    them to File/Form parameters, parse_form to the forms Easel reads itself)."""
    return {"max_files": max_files, "max_fields": max_fields}


async def parse_form(request: Request) -> FormData:
    """The request's form, parsed once with its route's limits (`form_limits`; MAX_FIELDS fields and one
    file when it declares none): the idempotency fingerprint and the route read the same form."""
    declared = getattr(request.scope.get("route"), "form_limits", None) or {}
    try:
        return await request.form(
            max_files=declared.get("max_files", 1), max_fields=declared.get("max_fields", MAX_FIELDS)
        )
    except HTTPException as e:
        if e.status_code == 413:  # the body over the route's cap: rendered by the route class
            raise
        raise ValidationFailed.for_field("body", f"malformed form body: {e.detail}") from None


async def read_upload(name: str, upload: UploadFile) -> bytes:
    """The bytes of an uploaded file (Starlette spooled it to a temporary file while parsing), read in
    chunks and refused (413) as soon as it is over MAX_FILE_BYTES."""
    if upload.size is not None and upload.size > MAX_FILE_BYTES:
        raise PayloadTooLarge.for_field(name, f"file larger than {MAX_FILE_BYTES} bytes")
    data = bytearray()
    while chunk := await upload.read(CHUNK):
        data += chunk
        if len(data) > MAX_FILE_BYTES:
            raise PayloadTooLarge.for_field(name, f"file larger than {MAX_FILE_BYTES} bytes")
    return bytes(data)


async def read_form(
    request: Request, *, file_fields: frozenset[str] = frozenset()
) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """The text fields of a form body (each name once) and its files as (field, bytes) in order. Files
    are accepted only under `file_fields`, and those fields must be files; how many, the route's
    `form_limits` say."""
    form = await parse_form(request)
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise ValidationFailed.for_field(name, "must be a text field, not a file")
                files.append((name, await read_upload(name, value)))
            elif name in file_fields:
                raise ValidationFailed.for_field(name, "must be a file (multipart file upload)")
            elif name in fields:
                raise ValidationFailed.for_field(name, "given more than once")
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields, files
