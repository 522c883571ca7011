"""`Generation` and `Image`: the canonical records, as read back from the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from easel.domain.pages import Cursor, PageRequest
from easel.domain.spec import GenerationSpec


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


@dataclass(frozen=True)
class Served:
    """The remote entry that served a generation (its own model or a fallback), its provider and the
    provider's id of the call."""

    model: str
    provider: str
    request_id: str | None = None


@dataclass(frozen=True)
class ImageFile:
    """Stored image bytes and what they are."""

    id: str
    index: int
    seed: int | None
    storage_key: str
    mime: str
    width: int
    height: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Image(ImageFile):
    """An image record: a file that belongs to a project, maybe to a generation, maybe to a folder."""

    project_id: str
    generation_id: str | None
    folder: str | None
    created_at: datetime


@dataclass(frozen=True)
class ListQuery:
    """Which generations a list returns: a page (domain/pages.py) of those with these statuses (any when
    empty), deleted ones too when asked."""

    statuses: tuple[Status, ...] = ()
    limit: int = 20
    offset: int = 0
    include_deleted: bool = False
    cursor: Cursor | None = None
    exact_total: bool = False

    @property
    def page(self) -> PageRequest:
        return PageRequest(self.limit, self.offset, self.cursor, self.exact_total)


@dataclass(frozen=True)
class Generation:
    id: str
    project_id: str
    status: Status
    spec: GenerationSpec
    attempts: int
    max_attempts: int
    progress_step: int
    progress_total: int
    error_code: str | None
    error_message: str | None
    credits: float
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    processing_ms: int | None
    deleted_at: datetime | None
    images: list[Image] = field(default_factory=list)
    queue_position: int | None = None  # 1-based place in the claim order, while queued
    eta_seconds: float | None = None  # estimated seconds until it finishes, while queued or running
    served: Served | None = None  # what served it, when a provider did (docs/gateway.md)

    @property
    def meta(self) -> dict[str, Any]:
        return self.spec.meta
