"""GET /metrics: Prometheus text exposition, every value read from the database at scrape time.

The database is the source of truth: N API processes and M workers on other machines share it, so any
API process answers with the same fleet-wide numbers (scrape one of them, or take `max` across them;
never `sum`). Nothing is counted in process memory. Series (docs/operations.md has PromQL and alerts):

- `easel_queue_depth{status,model}` (gauge): queued and running jobs.
- `easel_queue_oldest_age_seconds{model}` (gauge): age of the oldest queued job.
- `easel_images_generated_total{model}` (counter): generated image rows, all time (image rows are
  only ever soft-deleted, so the count never goes down).
- `easel_jobs_failed_total{model,error_code}` (counter): failed jobs, all time. A retried job leaves
  the failed state, which lowers it by one (Prometheus reads any decrease as a counter reset).
- `easel_jobs_ended{model,status,error_code}` (gauge): jobs that ended in the last window.
- `easel_job_{queue_wait,processing,end_to_end}_seconds{model}` (gauge histograms, `_bucket{le}`,
  `_gcount`, `_gsum`): succeeded jobs that ended in the last window. Take `histogram_quantile` of the
  buckets directly (no `rate()`: the window already is the rate).
- `easel_metrics_window_seconds` (gauge): that window (`EASEL_METRICS_WINDOW_SECONDS`).
- `easel_upstream_call_duration_seconds{provider}` (histogram), `easel_upstream_errors_total{provider,
  code}` (counter), `easel_upstream_circuit_open{provider}` and `easel_upstream_circuits_open` (gauges):
  the gateway's calls and circuits (docs/gateway.md), from its ledger.
- `easel_policy_decisions_total{rule,action}` (counter, this process's since it started): creates the
  content policy refused or flagged (docs/policy.md).
- `easel_worker_last_heartbeat_timestamp_seconds{worker,hostname}` (gauge, workers seen in the last
  hour) and `easel_workers_live` (gauge: seen within max(lease, 3 x idle check)).

The one exception, this process's own in-process worker (`easel serve` with a worker; absent otherwise),
counted in its memory since it started (benchmarks/serving.py reads them):

- `easel_worker_cpu_seconds_total{worker,stage}` (counter): thread CPU time by stage (db, inputs,
  generate, encode, store; engine/worker.py WorkerStats).
- `easel_worker_busy_seconds_total{worker,stage}` (counter): wall time the model (generate) and the
  post-processing (post) were busy.
- `easel_worker_batches_total`, `easel_worker_images_stored_total`, `easel_worker_progress_writes_total`
  `{worker}` (counters).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from easel.api.deps import MetricsDep, SettingsDep
from easel.domain.generation import Status
from easel.domain.metrics import FinishedJob, MetricsSnapshot, WorkerRecord, WorkerTimes
from easel.domain.upstream import LATENCY_BUCKETS as UPSTREAM_BUCKETS
from easel.service.metrics import MetricsService
from easel.settings import Settings

router = APIRouter(include_in_schema=False)

# Seconds: from a tiny model on a GPU (sub-second) to a large one on a busy queue (minutes).
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
HEARTBEAT_HORIZON = timedelta(hours=1)


def _histogram(name: str, doc: str, values: dict[str, list[float]]) -> GaugeHistogramMetricFamily:
    family = GaugeHistogramMetricFamily(name, doc, labels=["model"])
    for model in sorted(values):
        xs = values[model]
        buckets = [(_le(b), float(sum(1 for x in xs if x <= b))) for b in BUCKETS]
        buckets.append(("+Inf", float(len(xs))))
        family.add_metric([model], buckets, sum(xs))
    return family


def _le(bound: float) -> str:
    return repr(bound)


def _latencies(recent: Iterable[FinishedJob]) -> tuple[dict[str, list[float]], ...]:
    wait: dict[str, list[float]] = defaultdict(list)
    processing: dict[str, list[float]] = defaultdict(list)
    total: dict[str, list[float]] = defaultdict(list)
    for j in recent:
        if j.status != Status.SUCCEEDED.value:
            continue
        total[j.model].append(max(0.0, (j.finished_at - j.created_at).total_seconds()))
        if j.started_at is not None:
            wait[j.model].append(max(0.0, (j.started_at - j.created_at).total_seconds()))
        if j.processing_ms is not None:
            processing[j.model].append(j.processing_ms / 1000)
        elif j.started_at is not None:
            processing[j.model].append(max(0.0, (j.finished_at - j.started_at).total_seconds()))
    return wait, processing, total


class DatabaseCollector(Collector):
    """One scrape: read the snapshot and the workers, turn them into metric families."""

    def __init__(
        self, snapshot: MetricsSnapshot, workers: list[WorkerRecord], live_within: timedelta
    ) -> None:
        self.snapshot, self.workers, self.live_within = snapshot, workers, live_within

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        depth = GaugeMetricFamily(
            "easel_queue_depth", "Jobs waiting (queued) or being run (running).", labels=["status", "model"]
        )
        oldest = GaugeMetricFamily(
            "easel_queue_oldest_age_seconds", "Age of the oldest queued job.", labels=["model"]
        )
        for row in sorted(s.queue, key=lambda r: (r.status, r.model)):
            depth.add_metric([row.status, row.model], row.jobs)
            if row.status == Status.QUEUED.value and row.oldest_created_at is not None:
                age = max(0.0, (s.now - row.oldest_created_at).total_seconds())
                oldest.add_metric([row.model], age)
        yield depth
        yield oldest

        images = CounterMetricFamily(
            "easel_images_generated", "Images generated, all time (from the database).", labels=["model"]
        )
        for model, n in sorted(s.images_by_model.items()):
            images.add_metric([model], n)
        yield images

        failed = CounterMetricFamily(
            "easel_jobs_failed",
            "Jobs that ended failed, all time, by error code (a retried job leaves this count).",
            labels=["model", "error_code"],
        )
        for (model, code), n in sorted(s.failed.items()):
            failed.add_metric([model, code], n)
        yield failed

        ended = GaugeMetricFamily(
            "easel_jobs_ended",
            "Jobs that ended within the metrics window, by outcome.",
            labels=["model", "status", "error_code"],
        )
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        for j in s.recent:
            counts[(j.model, j.status, j.error_code or "")] += 1
        for key, n in sorted(counts.items()):
            ended.add_metric(list(key), n)
        yield ended

        wait, processing, total = _latencies(s.recent)
        window = "succeeded jobs that ended within the metrics window"
        yield _histogram("easel_job_queue_wait_seconds", f"Queue wait (started - created) of {window}.", wait)
        yield _histogram(
            "easel_job_processing_seconds",
            f"Processing time (the run that succeeded) of {window}.",
            processing,
        )
        yield _histogram(
            "easel_job_end_to_end_seconds", f"End-to-end time (finished - created) of {window}.", total
        )

        heartbeat = GaugeMetricFamily(
            "easel_worker_last_heartbeat_timestamp_seconds",
            "When each worker last reported in (Unix time); workers seen in the last hour.",
            labels=["worker", "hostname"],
        )
        live = 0
        for w in self.workers:
            heartbeat.add_metric([w.id, w.hostname], w.last_seen_at.timestamp())
            if s.now - w.last_seen_at <= self.live_within:
                live += 1
        yield heartbeat
        yield GaugeMetricFamily("easel_workers_live", "Workers whose last heartbeat is recent.", value=live)


def render_metrics(metrics: MetricsService, settings: Settings) -> bytes:
    """The exposition text of one scrape (blocking: database reads)."""
    snapshot = metrics.snapshot(timedelta(seconds=settings.metrics_window_seconds))
    workers = metrics.workers(HEARTBEAT_HORIZON)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(snapshot, workers, settings.worker_live_within))
    window = GaugeMetricFamily(
        "easel_metrics_window_seconds",
        "The window of easel_jobs_ended and the latency histograms.",
        value=settings.metrics_window_seconds,
    )
    registry.register(_Static([window]))
    registry.register(_Static(_upstream_families(metrics.upstream())))
    decisions = CounterMetricFamily(
        "easel_policy_decisions",
        "This process's content-policy decisions since it started, by rule and action (refuse, flag).",
        labels=["rule", "action"],
    )
    for (rule, action), n in sorted(metrics.policy_counts().items()):
        decisions.add_metric([rule, action], n)
    registry.register(_Static([decisions]))
    local = metrics.local_worker_times()
    if local is not None:
        registry.register(_Static(_worker_families(local)))
    return generate_latest(registry)


def _upstream_families(u: dict[str, Any]) -> list[Metric]:
    """The gateway's series (docs/gateway.md), from its call ledger and circuits: never a key."""
    latency = HistogramMetricFamily(
        "easel_upstream_call_duration_seconds",
        "Calls to each provider (retries included), all time, by duration.",
        labels=["provider"],
    )
    for provider, h in sorted(u["latency"].items()):
        buckets = [(_le(b), float(n)) for b, n in zip(UPSTREAM_BUCKETS, h["buckets"], strict=True)]
        buckets.append(("+Inf", float(h["count"])))
        latency.add_metric([provider], buckets, h["sum"])
    errors = CounterMetricFamily(
        "easel_upstream_errors",
        "Calls to each provider that ended in an error, by code.",
        labels=["provider", "code"],
    )
    for provider, code, n in sorted(u["errors"]):
        errors.add_metric([provider, code], n)
    state = GaugeMetricFamily(
        "easel_upstream_circuit_open",
        "1 while a provider's circuit is open or half-open.",
        labels=["provider"],
    )
    for c in u["circuits"]:
        state.add_metric([c.provider], 0.0 if c.state == "closed" else 1.0)
    opened = sum(1 for c in u["circuits"] if c.state != "closed")
    total = GaugeMetricFamily(
        "easel_upstream_circuits_open", "Providers whose circuit is not closed.", value=opened
    )
    return [latency, errors, state, total]


def _worker_families(t: WorkerTimes) -> list[Metric]:
    """The in-process worker's own counters (this process only, not the fleet's)."""
    cpu = CounterMetricFamily(
        "easel_worker_cpu_seconds",
        "This process's worker: thread CPU seconds by stage, since it started.",
        labels=["worker", "stage"],
    )
    for stage, seconds in t.cpu_seconds.items():
        cpu.add_metric([t.worker_id, stage], seconds)
    busy = CounterMetricFamily(
        "easel_worker_busy_seconds",
        "This process's worker: wall seconds the model (generate) and post-processing (post) were busy.",
        labels=["worker", "stage"],
    )
    for stage, seconds in t.busy_seconds.items():
        busy.add_metric([t.worker_id, stage], seconds)
    out: list[Metric] = [cpu, busy]
    for name, doc, value in (
        ("easel_worker_batches", "This process's worker: pipeline calls that returned images.", t.batches),
        ("easel_worker_images_stored", "This process's worker: images stored and completed.", t.images),
        (
            "easel_worker_progress_writes",
            "This process's worker: progress writes to the database.",
            t.progress_writes,
        ),
    ):
        family = CounterMetricFamily(name, doc, labels=["worker"])
        family.add_metric([t.worker_id], value)
        out.append(family)
    return out


class _Static(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


@router.get("/metrics")
async def metrics(service: MetricsDep, settings: SettingsDep) -> Response:
    if not settings.metrics_enabled:
        return Response("Not Found\n", status_code=404, media_type="text/plain")
    body = await anyio.to_thread.run_sync(lambda: render_metrics(service, settings))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
