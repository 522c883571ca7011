"""Image inputs of a generation request, as every dialect hands them to `GenerationService.submit`.

An input is one of: an image already stored in the project (its id), an http(s) URL or a data: URI (fetched
by the service under the SSRF and size rules of service/fetch.py), or uploaded bytes. Each has a role:
the source of an image-to-image / inpaint / variation job, or the mask of an inpaint job. `field` is the
request field it came from, so a refusal (not found, not an image, too large, a refused URL) names what the
client sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    SOURCE = "source"
    MASK = "mask"


class MaskEncoding(StrEnum):
    """How a mask marks the area to repaint."""

    WHITE = "white"  # Easel's own: white (luminance > 127) = repaint, black = keep
    TRANSPARENT = "transparent"  # OpenAI's: fully transparent pixels = repaint (needs an alpha channel)


@dataclass(frozen=True)
class ImageInput:
    role: Role
    field: str
    image_id: str | None = None  # an image stored in the caller's project
    url: str | None = None  # http(s) URL or data: URI
    data: bytes | None = None  # uploaded bytes (PNG, JPEG or WebP)
    mask_encoding: MaskEncoding = MaskEncoding.WHITE

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.image_id, self.url, self.data))
        if given != 1:
            raise ValueError("an ImageInput is exactly one of image_id, url or data")

    @classmethod
    def stored(cls, role: Role, image_id: str, field: str) -> ImageInput:
        return cls(role, field, image_id=image_id)

    @classmethod
    def from_url(cls, role: Role, url: str, field: str) -> ImageInput:
        return cls(role, field, url=url)

    @classmethod
    def upload(
        cls, role: Role, data: bytes, field: str, mask_encoding: MaskEncoding = MaskEncoding.WHITE
    ) -> ImageInput:
        return cls(role, field, data=data, mask_encoding=mask_encoding)


def count(inputs: Sequence[ImageInput], role: Role) -> int:
    return sum(1 for i in inputs if i.role is role)
