"""Pillow helpers shared by the engine and the API: encoding outputs and decoding inputs safely."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image
from PIL.Image import Image as PILImage

from easel.domain.errors import ValidationFailed
from easel.domain.spec import OutputFormat

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
ALLOWED_INPUT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_INPUT_PIXELS = 4096 * 4096


def resample_filter(name: str) -> Image.Resampling:
    try:
        return FILTERS[name]
    except KeyError:
        raise ValueError(f"unknown upscale filter {name!r}; known: {', '.join(FILTERS)}") from None


@dataclass(frozen=True)
class Encoded:
    data: bytes
    mime: str
    width: int
    height: int
    sha256: str


def encode(image: PILImage, fmt: OutputFormat, compression: int | None = None) -> Encoded:
    """Encode deterministically (same pixels -> same bytes). `compression` 0-100: for JPEG/WebP it is
    100 - quality; for PNG it maps onto zlib levels 0-9."""
    buf = io.BytesIO()
    if fmt is OutputFormat.PNG:
        level = 6 if compression is None else round(compression * 9 / 100)
        image.save(buf, "PNG", compress_level=level)
    elif fmt is OutputFormat.JPEG:
        image.convert("RGB").save(buf, "JPEG", quality=100 - (compression or 10))
    else:
        image.save(buf, "WEBP", quality=100 - (compression or 10))
    data = buf.getvalue()
    return Encoded(data, fmt.mime, image.width, image.height, hashlib.sha256(data).hexdigest())


def decode_upload(data: bytes, field: str = "image") -> tuple[PILImage, str]:
    """Decode client-supplied bytes with limits: PNG/JPEG/WebP only, at most MAX_INPUT_PIXELS, fully
    loaded (so truncated files fail here, not in a worker). Returns the image and its mime type."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            if fmt not in ALLOWED_INPUT_FORMATS:
                raise ValidationFailed.for_field(
                    field, f"unsupported image format {fmt or 'unknown'}; allowed: PNG, JPEG, WebP"
                )
            w, h = probe.size
            if w * h > MAX_INPUT_PIXELS:
                raise ValidationFailed.for_field(
                    field, f"image is {w}x{h}; at most {MAX_INPUT_PIXELS} pixels"
                )
            probe.load()
            image = probe.copy()
    except ValidationFailed:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValidationFailed.for_field(field, f"not a readable image ({type(e).__name__})") from e
    return image, ALLOWED_INPUT_FORMATS[fmt]
