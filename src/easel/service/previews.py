"""A preview event's picture as bytes for a stream: the native stream's JPEG, or OpenAI's partial image in
the request's output format. A preview from this process's worker carries the picture (`image`), one
relayed from a worker in another process its JPEG bytes (`jpeg`, engine/previews.py)."""

from __future__ import annotations

import io

from PIL import Image

from easel.domain.spec import OutputFormat
from easel.imaging import encode
from easel.service.events import JobEvent

PREVIEW_COMPRESSION = 20  # JPEG / WebP quality 80 (imaging.encode's scale: 100 - quality)


def preview_bytes(event: JobEvent, fmt: OutputFormat = OutputFormat.JPEG) -> tuple[bytes, str]:
    """(bytes, media type) of a preview event's picture in `fmt` (JPEG as the worker sent it when it
    came from another process)."""
    sent = event.data.get("jpeg")
    if fmt is OutputFormat.JPEG and isinstance(sent, bytes):
        return sent, fmt.mime
    picture = event.data.get("image")
    if picture is None:
        if not isinstance(sent, bytes):
            raise ValueError(f"preview event of {event.generation_id} carries no picture")
        with Image.open(io.BytesIO(sent)) as opened:  # our own worker's JPEG, at most 512 px a side
            picture = opened.convert("RGB")
    compression = None if fmt is OutputFormat.PNG else PREVIEW_COMPRESSION
    return encode(picture, fmt, compression).data, fmt.mime
