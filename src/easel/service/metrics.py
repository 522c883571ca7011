"""The fleet's numbers for GET /metrics, read from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from easel.domain.metrics import MetricsSnapshot, WorkerRecord
from easel.store.metrics import read_snapshot
from easel.store.workers import WorkerRegistry


class MetricsService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = WorkerRegistry(engine)

    def snapshot(self, window: timedelta) -> MetricsSnapshot:
        return read_snapshot(self.engine, window)

    def workers(self, within: timedelta) -> list[WorkerRecord]:
        return self.registry.recent(within)
