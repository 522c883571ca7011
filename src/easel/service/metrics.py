"""The fleet's numbers for GET /metrics, read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from easel.domain.metrics import MetricsSnapshot, WorkerRecord, WorkerTimes
from easel.store.metrics import read_snapshot
from easel.store.upstream import UpstreamLedger
from easel.store.workers import WorkerRegistry


class MetricsService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = WorkerRegistry(engine)
        self.ledger = UpstreamLedger(engine)
        # The in-process worker's own counters (app.py sets it when `easel serve` runs a worker).
        self.local_worker: Callable[[], WorkerTimes] | None = None
        # This process's content-policy decisions, (rule, action) -> requests (runtime.py sets it).
        self.policy_counts: Callable[[], dict[tuple[str, str], int]] = dict

    def snapshot(self, window: timedelta) -> MetricsSnapshot:
        return read_snapshot(self.engine, window)

    def workers(self, within: timedelta) -> list[WorkerRecord]:
        return self.registry.recent(within)

    def upstream(self) -> dict[str, Any]:
        """The gateway's numbers: call latency by provider, errors by code, circuits."""
        return self.ledger.metrics()

    def local_worker_times(self) -> WorkerTimes | None:
        """What this process's own worker counted (None when it runs none)."""
        return self.local_worker() if self.local_worker is not None else None
