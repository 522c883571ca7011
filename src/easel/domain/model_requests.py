"""Loading and unloading models on workers: the requests the server admin makes, and what each worker
reports it has loaded.

A request (`POST /api/v1/admin/models/{name}/load` or `/unload`) is one row per live worker serving
the model. Its worker performs it between two batches, never during a pipeline call:
`queued -> running -> done | failed`. A request whose worker died (or stopped) before finishing it is
`lost`: nobody else will do it, and the error says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ModelAction(StrEnum):
    LOAD = "load"
    UNLOAD = "unload"


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"


PENDING = (RequestStatus.QUEUED, RequestStatus.RUNNING)
RECENT_REQUESTS = 10  # how many requests GET /api/v1/admin/models lists (and lost ones, apart)


@dataclass(frozen=True)
class ModelRequest:
    id: str
    model: str  # the catalog's canonical name
    action: ModelAction
    worker_id: str
    status: RequestStatus
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class LoadedModel:
    """One pipeline a worker holds in memory: the source it was loaded from, the catalog entries that
    share it (they share one pipeline), since when, and its weights' size when the backend knows it."""

    source: str
    models: tuple[str, ...]
    since: datetime
    memory_bytes: int | None = None


def lost_message(worker_id: str, *, stopped: bool = False) -> str:
    """Why a request is lost: its worker will never do it."""
    how = "stopped" if stopped else "died (no heartbeat)"
    return f"worker {worker_id} {how} before doing this request"
