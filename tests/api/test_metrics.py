"""GET /metrics: every value is what the database says, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from easel.domain.spec import GenerationSpec
from easel.store.tables import generations, images, utcnow


def scrape(api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:  # type: ignore[no-untyped-def]
    """{sample name: {sorted labels: value}}, fetched without any credential."""
    r = api.get("/metrics", headers={"Authorization": "", "X-API-Key": "", "X-Client-Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def make(runtime, model: str, **kw):  # type: ignore[no-untyped-def]
    spec = GenerationSpec(prompt="a red circle", model=model, size="64x64", **kw)
    return runtime.generations.submit(runtime.principal(), spec)


def test_metrics_match_the_database(api, runtime) -> None:
    make(runtime, "tiny", n=2, steps=1)
    make(runtime, "tiny-square", steps=1)
    worker = runtime.make_worker()
    while worker.run_once():
        pass
    failed = make(runtime, "tiny", steps=1)
    [job] = runtime.queue.claim_batch("w-test", models=None, max_images=8)
    assert job.id == failed.id
    runtime.queue.fail(job, "generation_failed", "boom")
    queued = [make(runtime, "tiny-square", steps=1), make(runtime, "tiny-square", steps=1)]
    # One of them waited 10 minutes already.
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(generations)
            .where(generations.c.id == queued[0].id)
            .values(created_at=utcnow() - timedelta(minutes=10))
        )
    worker.report_alive(every=0)

    m = scrape(api)

    # Queue depth, as one GROUP BY says.
    with runtime.repo.engine.connect() as conn:
        rows = conn.execute(
            select(generations.c.status, generations.c.model, func.count())
            .where(generations.c.status.in_(["queued", "running"]))
            .group_by(generations.c.status, generations.c.model)
        ).all()
        image_count = conn.execute(select(func.count()).select_from(images)).scalar()
    assert {(("model", mo), ("status", st)): float(n) for st, mo, n in rows} == m["easel_queue_depth"]
    assert m["easel_queue_depth"] == {(("model", "tiny-square"), ("status", "queued")): 2.0}
    assert 600 <= m["easel_queue_oldest_age_seconds"][(("model", "tiny-square"),)] < 700

    # Images per model (counter), failures by code (counter), outcomes in the window (gauge).
    assert m["easel_images_generated_total"] == {(("model", "tiny"),): 2.0, (("model", "tiny-square"),): 1.0}
    assert sum(m["easel_images_generated_total"].values()) == image_count
    assert m["easel_jobs_failed_total"] == {(("error_code", "generation_failed"), ("model", "tiny")): 1.0}
    assert m["easel_jobs_ended"] == {
        (("error_code", ""), ("model", "tiny"), ("status", "succeeded")): 1.0,
        (("error_code", ""), ("model", "tiny-square"), ("status", "succeeded")): 1.0,
        (("error_code", "generation_failed"), ("model", "tiny"), ("status", "failed")): 1.0,
    }

    # Latency histograms over the succeeded jobs of the window, equal to the rows' own times.
    with runtime.repo.engine.connect() as conn:
        done = conn.execute(select(generations).where(generations.c.status == "succeeded")).all()
    for row in done:
        model = (("model", row.model),)
        e2e = (row.finished_at - row.created_at).total_seconds()
        wait = (row.started_at - row.created_at).total_seconds()
        assert m["easel_job_end_to_end_seconds_gcount"][model] == 1.0
        assert abs(m["easel_job_end_to_end_seconds_gsum"][model] - e2e) < 1e-3
        assert abs(m["easel_job_queue_wait_seconds_gsum"][model] - wait) < 1e-3
        assert abs(m["easel_job_processing_seconds_gsum"][model] - row.processing_ms / 1000) < 1e-3
        buckets = {
            dict(k)["le"]: v for k, v in m["easel_job_end_to_end_seconds_bucket"].items() if model[0] in k
        }
        assert buckets["+Inf"] == 1.0
        assert all(v == (1.0 if float(le) >= e2e else 0.0) for le, v in buckets.items())
    assert m["easel_metrics_window_seconds"][()] == runtime.settings.metrics_window_seconds

    # The worker reported in just now.
    [(labels, seen)] = m["easel_worker_last_heartbeat_timestamp_seconds"].items()
    assert dict(labels)["worker"] == worker.id
    assert abs(seen - utcnow().timestamp()) < 30
    assert m["easel_workers_live"][()] == 1.0


def test_old_jobs_leave_the_window_but_not_the_totals(api, runtime) -> None:
    make(runtime, "tiny", steps=1)
    assert runtime.make_worker().run_once()
    with runtime.repo.engine.begin() as conn:
        conn.execute(update(generations).values(finished_at=utcnow() - timedelta(hours=1)))
    m = scrape(api)
    assert m.get("easel_jobs_ended", {}) == {}
    assert m.get("easel_job_end_to_end_seconds_bucket", {}) == {}
    assert m["easel_images_generated_total"] == {(("model", "tiny"),): 1.0}


def test_a_stopped_worker_is_gone_and_a_silent_one_is_not_live(api, runtime) -> None:
    from easel.store.tables import workers

    w = runtime.make_worker()
    w.report_alive(every=0)
    with runtime.repo.engine.begin() as conn:  # its heartbeat is old: it died
        conn.execute(update(workers).values(last_seen_at=utcnow() - timedelta(minutes=5)))
    m = scrape(api)
    assert len(m["easel_worker_last_heartbeat_timestamp_seconds"]) == 1
    assert m["easel_workers_live"][()] == 0.0
    w.stop()
    w.run_forever()  # returns at once (stopped) and removes its row
    m = scrape(api)
    assert m.get("easel_worker_last_heartbeat_timestamp_seconds", {}) == {}


def test_metrics_can_be_turned_off(api, runtime) -> None:
    runtime.services.settings = runtime.settings.model_copy(update={"metrics_enabled": False})
    assert api.get("/metrics").status_code == 404
