"""Typed results: generations, images, pages and stream events, as dataclasses.

Each keeps the server's JSON as `raw`, so a field this version of the client does not model yet is still
reachable (`gen.raw["someNewField"]`).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import os
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

Status = Literal["pending", "processing", "success", "failed", "canceled"]
FINISHED: frozenset[str] = frozenset({"success", "failed", "canceled"})


class Fetcher(Protocol):
    """Downloads a signed link (the client an image came from)."""

    def fetch(self, url: str) -> bytes: ...

    def afetch(self, url: str) -> Awaitable[bytes]: ...


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class Image:
    """An image of the library (generated or uploaded). `url` is a signed link: it needs no key and is
    valid for a while (an hour by default); `bytes()` / `save()` download it (`abytes()` / `asave()`
    with `AsyncEasel`)."""

    id: str
    url: str
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    sha256: str | None = None
    seed: int | None = None
    index: int | None = None
    generation_id: str | None = None
    folder: str | None = None
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    _fetcher: Fetcher | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], fetcher: Fetcher | None = None) -> Image:
        return cls(
            id=str(data.get("id", "")),
            url=str(data.get("storageUrl") or data.get("url") or ""),
            mime_type=_str(data.get("mimeType")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            file_size=_int(data.get("fileSize")),
            sha256=_str(data.get("sha256")),
            seed=_int(data.get("seed")),
            index=_int(data.get("index")),
            generation_id=_str(data.get("generationId")),
            folder=_str(data.get("folder")),
            created_at=_time(data.get("createdAt")),
            raw=data,
            _fetcher=fetcher,
        )

    def _require_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            raise RuntimeError("this Image was not made by a client; download image.url yourself")
        return self._fetcher

    def bytes(self) -> bytes:
        """The image file's bytes (downloads the signed link)."""
        return self._require_fetcher().fetch(self.url)

    async def abytes(self) -> builtins.bytes:
        """`bytes()` for async code."""
        return await self._require_fetcher().afetch(self.url)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Download to `path`; returns it."""
        target = Path(path)
        target.write_bytes(self.bytes())
        return target

    async def asave(self, path: str | os.PathLike[str]) -> Path:
        """`save()` for async code."""
        import asyncio

        target = Path(path)
        data = await self.abytes()
        await asyncio.to_thread(target.write_bytes, data)
        return target


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


@dataclass
class Generation:
    """A generation as `GET /api/v1/generations/{id}` returns it (the common fields typed; all in `raw`)."""

    id: str
    status: str
    prompt: str | None = None
    original_prompt: str | None = None
    negative_prompt: str | None = None
    model: str | None = None
    task: str | None = None
    width: int | None = None
    height: int | None = None
    n: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    output_format: str | None = None
    priority: str | None = None
    progress: Progress | None = None
    queue_position: int | None = None
    eta_seconds: float | None = None
    images: list[Image] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    credits: float | None = None
    attempts: int | None = None
    processing_time_ms: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], fetcher: Fetcher | None = None) -> Generation:
        prog = data.get("progress")
        progress = None
        if isinstance(prog, dict) and _int(prog.get("step")) is not None:
            progress = Progress(int(prog["step"]), _int(prog.get("total")) or 0)
        images = data.get("outputImages")
        if not isinstance(images, list):
            images = [data["outputImage"]] if isinstance(data.get("outputImage"), dict) else []
        meta = data.get("meta")
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            prompt=_str(data.get("prompt")),
            original_prompt=_str(data.get("originalPrompt")),
            negative_prompt=_str(data.get("negativePrompt")),
            model=_str(data.get("model")),
            task=_str(data.get("task")),
            width=_int(data.get("width")),
            height=_int(data.get("height")),
            n=_int(data.get("n")),
            seed=_int(data.get("seed")),
            steps=_int(data.get("steps")),
            guidance=_float(data.get("guidance")),
            strength=_float(data.get("strength")),
            output_format=_str(data.get("outputFormat")),
            priority=_str(data.get("priority")),
            progress=progress,
            queue_position=_int(data.get("queuePosition")),
            eta_seconds=_float(data.get("etaSeconds")),
            images=[Image.from_json(i, fetcher) for i in images if isinstance(i, dict)],
            error_code=_str(data.get("errorCode")),
            error_message=_str(data.get("errorMessage")),
            credits=_float(data.get("credits")),
            attempts=_int(data.get("attempts")),
            processing_time_ms=_int(data.get("processingTimeMs")),
            meta=meta if isinstance(meta, dict) else {},
            created_at=_time(data.get("createdAt")),
            updated_at=_time(data.get("updatedAt")),
            started_at=_time(data.get("startedAt")),
            finished_at=_time(data.get("finishedAt")),
            raw=data,
        )

    @property
    def done(self) -> bool:
        """It has ended: success, failed or canceled."""
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def image(self) -> Image | None:
        """The first image (`outputImage`), if any."""
        return self.images[0] if self.images else None


@dataclass
class Page:
    """One page of `list()`: newest first. `total` is None when more than 10,000 match (unless the list
    asked `include_total`); `next_cursor` gives the next page (`list(cursor=...)`), None on the last."""

    items: list[Generation]
    limit: int
    offset: int
    total: int | None
    has_more: bool
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[Generation]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


# ------------------------------------------------------------------------------------------------------
# Stream events (GET /api/v1/generations/{id}/events)


@dataclass(frozen=True)
class QueuedEvent:
    """While pending: the 1-based queue position (sent first, then on each change)."""

    position: int | None
    id: str | None = None
    type: Literal["queued"] = "queued"


@dataclass(frozen=True)
class ProgressEvent:
    """While processing: denoising step `step` of `total`."""

    step: int
    total: int
    id: str | None = None
    type: Literal["progress"] = "progress"


@dataclass(frozen=True)
class PreviewEvent:
    """A preview of the image being made (requested with the create field `previews: N`): at denoising
    step `step` of `total`, preview number `index` (0..count-1) of image `image_index` of the job.
    `image` is a `data:image/jpeg;base64,...` URI (or a short-lived link); `image_bytes()` decodes a data
    URI. `data` holds every field the server sent."""

    step: int | None
    total: int | None
    index: int | None
    image: str
    width: int | None = None
    height: int | None = None
    count: int | None = None
    image_index: int | None = None
    id: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    type: Literal["preview"] = "preview"

    @property
    def media_type(self) -> str | None:
        """`image/jpeg` for a data URI of that type; None for a link."""
        if not self.image.startswith("data:"):
            return None
        return self.image[5:].split(",", 1)[0].split(";", 1)[0] or None

    def image_bytes(self) -> bytes:
        """The preview's bytes, decoded from its data URI."""
        if not self.image.startswith("data:") or "," not in self.image:
            raise ValueError("this preview is a link, not a data URI: download preview.image")
        head, payload = self.image[5:].split(",", 1)
        if head.endswith(";base64"):
            try:
                return base64.b64decode(payload, validate=True)
            except binascii.Error as e:
                raise ValueError(f"the preview's data URI is not valid base64: {e}") from None
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(payload)


@dataclass(frozen=True)
class CompletedEvent:
    """The last event: `succeeded`, `failed` or `canceled`, with the generation as GET returns it."""

    type: Literal["succeeded", "failed", "canceled"]
    generation: Generation
    id: str | None = None


@dataclass(frozen=True)
class UnknownEvent:
    """An event this client does not know (a newer server): its name and parsed data."""

    type: str
    data: Any
    id: str | None = None


StreamEvent = QueuedEvent | ProgressEvent | PreviewEvent | CompletedEvent | UnknownEvent
