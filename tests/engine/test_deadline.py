"""The per-job deadline (EASEL_JOB_TIMEOUT_SECONDS): the worker stops a late job at its next step, and
the claim sweep fails a job stuck past deadline + lease even while its worker's heartbeats go on."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from easel.store.queue import DEADLINE_EXCEEDED
from easel.store.tables import generations, utcnow


def make(runtime, **kw):  # type: ignore[no-untyped-def]
    return runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="a red circle", **kw))


def get(runtime, gid: str):  # type: ignore[no-untyped-def]
    return runtime.repo.get_generation(runtime.default_project_id, gid)


def set_started(runtime, gid: str, ago: float) -> None:  # type: ignore[no-untyped-def]
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(generations)
            .where(generations.c.id == gid)
            .values(started_at=utcnow() - timedelta(seconds=ago))
        )


def test_a_job_past_its_deadline_fails_at_its_next_step(runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"job_timeout_seconds": 0.2})
    gen = make(runtime, size="128x128", steps=200)
    worker = runtime.make_worker()
    assert worker.run_once()
    final = get(runtime, gen.id)
    assert final.status is Status.FAILED
    assert final.error_code == DEADLINE_EXCEEDED
    assert final.images == []
    assert final.progress_step < 200
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{gen.id}/") == []


def test_only_the_late_job_of_a_batch_fails(runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"job_timeout_seconds": 60})
    late = make(runtime, size="64x64", steps=2, seed=1)
    assert len(runtime.queue.claim_batch("w-dead", models=None, max_images=8)) == 1
    # Its worker died; it first started 62 s ago: past the deadline, not yet past deadline + lease.
    set_started(runtime, late.id, 62)
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(generations)
            .where(generations.c.id == late.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    fresh = make(runtime, size="64x64", steps=2, seed=2)
    worker = runtime.make_worker()
    assert worker.run_once()
    assert worker.stats.last_batch_jobs == 2  # one batch: the rescued job and the new one
    assert get(runtime, late.id).error_code == DEADLINE_EXCEEDED
    done = get(runtime, fresh.id)
    assert done.status is Status.SUCCEEDED and len(done.images) == 1


def test_the_sweep_fails_a_stuck_job_whose_heartbeats_go_on(runtime) -> None:
    gen = make(runtime, size="64x64", steps=2)
    [stuck] = runtime.queue.claim_batch("w-stuck", models=None, max_images=8)
    timeout = 30.0
    lease = runtime.settings.lease_seconds
    # Running for longer than deadline + lease, lease still fresh (heartbeats continue).
    set_started(runtime, gen.id, timeout + lease + 1)
    assert runtime.queue.heartbeat([stuck]) == {gen.id}
    # Without a deadline the sweep leaves it alone; with one, the next claim (any worker) fails it.
    assert runtime.queue.claim_batch("w2", models=None, max_images=8) == []
    assert get(runtime, gen.id).status is Status.RUNNING
    assert runtime.queue.claim_batch("w2", models=None, max_images=8, job_timeout=timeout) == []
    final = get(runtime, gen.id)
    assert final.status is Status.FAILED and final.error_code == DEADLINE_EXCEEDED
    # The stuck worker's later writes are refused.
    assert runtime.queue.heartbeat([stuck]) == set()
    assert runtime.queue.complete(stuck, [], 1) is False


def test_the_sweep_spares_a_job_within_deadline_plus_lease(runtime) -> None:
    gen = make(runtime, size="64x64", steps=2)
    runtime.queue.claim_batch("w1", models=None, max_images=8)
    set_started(runtime, gen.id, 30 + runtime.settings.lease_seconds - 2)
    assert runtime.queue.claim_batch("w2", models=None, max_images=8, job_timeout=30) == []
    assert get(runtime, gen.id).status is Status.RUNNING
