"""The one reader of form bodies (multipart/form-data and urlencoded) for every dialect."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from easel.domain.errors import ValidationFailed

# Uploaded files larger than this are refused before decoding (OpenAI's own limit is 50 MB).
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_FIELDS = 100


async def read_form(
    request: Request, *, file_fields: frozenset[str] = frozenset(), max_files: int = 1
) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """The text fields of a form body (each name once) and its files as (field, bytes) in order. Files
    are accepted only under `file_fields`, and those fields must be files."""
    try:
        form = await request.form(max_files=max_files, max_fields=MAX_FIELDS)
    except HTTPException as e:
        raise ValidationFailed.for_field("body", f"malformed form body: {e.detail}") from None
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise ValidationFailed.for_field(name, "must be a text field, not a file")
                if value.size is not None and value.size > MAX_FILE_BYTES:
                    raise ValidationFailed.for_field(name, f"file larger than {MAX_FILE_BYTES} bytes")
                files.append((name, await value.read()))
            elif name in file_fields:
                raise ValidationFailed.for_field(name, "must be a file (multipart file upload)")
            elif name in fields:
                raise ValidationFailed.for_field(name, "given more than once")
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields, files
