"""What GET /metrics reports, read from the database at scrape time (store/metrics.py, store/workers.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from easel.domain.model_requests import LoadedModel


@dataclass(frozen=True)
class QueueRow:
    status: str
    model: str
    jobs: int
    oldest_created_at: datetime | None


@dataclass(frozen=True)
class FinishedJob:
    model: str
    status: str
    error_code: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime
    processing_ms: int | None


@dataclass(frozen=True)
class MetricsSnapshot:
    now: datetime
    queue: list[QueueRow]
    images_by_model: dict[str, int]
    failed: dict[tuple[str, str], int]  # (model, error_code) -> failed jobs
    recent: list[FinishedJob]  # jobs that ended within the window


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    hostname: str
    pid: int
    models: list[str]
    started_at: datetime
    last_seen_at: datetime
    loaded: tuple[LoadedModel, ...] | None = None  # what it reports it has loaded; None: never reported


@dataclass(frozen=True)
class WorkerTimes:
    """What an in-process worker counted in its own process's memory since it started (GET /metrics
    shows it beside the database's fleet-wide numbers, for that process only): batches, jobs, images
    stored, progress writes, thread CPU seconds by stage (db, inputs, generate, encode, store) and the
    wall seconds the model (`generate`) and the post-processing (`post`) were busy."""

    worker_id: str
    batches: int
    jobs: int
    images: int
    progress_writes: int
    cpu_seconds: dict[str, float]
    busy_seconds: dict[str, float]
