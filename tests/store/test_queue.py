"""The queue's state machine on both databases: claims, leases, fencing, rescue, batching."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from easel.domain.errors import NotFound
from easel.domain.generation import ImageFile, Status
from easel.domain.spec import GenerationSpec
from easel.store.queue import WORKER_LOST, JobQueue
from easel.store.repository import new_id
from easel.store.tables import generations, utcnow


def make(runtime, prompt: str = "x", **kw):  # type: ignore[no-untyped-def]
    return runtime.generations.submit(runtime.principal(), GenerationSpec(prompt=prompt, **kw))


def expire(runtime, gid: str) -> None:  # type: ignore[no-untyped-def]
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(generations)
            .where(generations.c.id == gid)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def status(runtime, gid: str):  # type: ignore[no-untyped-def]
    return runtime.repo.get_generation(runtime.default_project_id, gid, include_deleted=True)


def img(index: int, key: str) -> ImageFile:
    return ImageFile(
        id=new_id(),
        index=index,
        seed=index,
        storage_key=key,
        mime="image/png",
        width=8,
        height=8,
        bytes=3,
        sha256="0" * 64,
    )


def test_queued_running_succeeded(runtime) -> None:
    gen = make(runtime)
    assert gen.status is Status.QUEUED and gen.attempts == 0 and gen.queue_position == 1
    [job] = runtime.queue.claim_batch("w1", models=None, max_images=8)
    running = status(runtime, gen.id)
    assert running.status is Status.RUNNING and running.attempts == 1 and running.started_at is not None
    assert runtime.queue.progress([job], 2, 4) == {gen.id}
    assert status(runtime, gen.id).progress_step == 2
    assert runtime.queue.complete(job, [img(0, f"k/{gen.id}/0.png")], 123)
    done = status(runtime, gen.id)
    assert done.status is Status.SUCCEEDED and done.processing_ms == 123 and len(done.images) == 1
    assert done.finished_at is not None and done.progress_step == done.progress_total


def test_running_failed(runtime) -> None:
    gen = make(runtime)
    [job] = runtime.queue.claim_batch("w1", models=None, max_images=8)
    assert runtime.queue.fail(job, "generation_failed", "boom")
    failed = status(runtime, gen.id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        Status.FAILED,
        "generation_failed",
        "boom",
    )


def test_cancel_queued_is_never_claimed(runtime) -> None:
    gen = make(runtime)
    assert runtime.generations.cancel(runtime.default_project_id, gen.id).status is Status.CANCELED
    assert runtime.queue.claim_batch("w1", models=None, max_images=8) == []


def test_cancel_running_fences_the_worker(runtime) -> None:
    gen = make(runtime)
    [job] = runtime.queue.claim_batch("w1", models=None, max_images=8)
    runtime.generations.cancel(runtime.default_project_id, gen.id)
    assert runtime.queue.progress([job], 1, 4) == set()  # the worker learns at its next step
    assert not runtime.queue.complete(job, [img(0, "k/x/0.png")], 1)
    final = status(runtime, gen.id)
    assert final.status is Status.CANCELED and final.images == []


def test_expired_lease_is_reclaimed_and_old_worker_fenced(runtime) -> None:
    gen = make(runtime)
    [old] = runtime.queue.claim_batch("w1", models=None, max_images=8)
    assert runtime.queue.claim_batch("w2", models=None, max_images=8) == []  # lease still valid
    expire(runtime, gen.id)
    [new] = runtime.queue.claim_batch("w2", models=None, max_images=8)
    assert new.id == gen.id and new.attempts == 2 and new.lease_token != old.lease_token
    assert runtime.queue.heartbeat([old]) == set()
    assert not runtime.queue.complete(old, [img(0, "k/a/0.png")], 1)
    assert runtime.queue.complete(new, [img(0, "k/b/0.png")], 1)
    final = status(runtime, gen.id)
    assert final.attempts == 2 and [i.storage_key for i in final.images] == ["k/b/0.png"]


def test_attempts_are_capped(runtime) -> None:
    gen = make(runtime)
    for _ in range(runtime.settings.max_attempts):
        assert runtime.queue.claim_batch("w", models=None, max_images=8)
        expire(runtime, gen.id)
    assert runtime.queue.claim_batch("w", models=None, max_images=8) == []
    final = status(runtime, gen.id)
    assert final.status is Status.FAILED and final.error_code == WORKER_LOST
    assert final.attempts == runtime.settings.max_attempts


def test_heartbeat_keeps_the_lease(runtime) -> None:
    queue = JobQueue(runtime.repo.engine, lease_seconds=0.6, render_event=runtime.queue.render_event)
    gen = make(runtime)
    [job] = queue.claim_batch("w1", models=None, max_images=8)
    for _ in range(3):
        time.sleep(0.3)
        assert queue.heartbeat([job]) == {gen.id}
    assert queue.claim_batch("w2", models=None, max_images=8) == []


def test_release_returns_job_without_counting_attempt(runtime) -> None:
    gen = make(runtime)
    [job] = runtime.queue.claim_batch("w1", models=None, max_images=8)
    assert runtime.queue.release(job)
    again = status(runtime, gen.id)
    assert again.status is Status.QUEUED and again.attempts == 0


def test_batch_claims_compatible_jobs_only(runtime) -> None:
    a = make(runtime, "a", seed=1)
    b = make(runtime, "b", seed=2, n=2)
    other = make(runtime, "c", size="64x64")
    c = make(runtime, "d", seed=3, n=4)
    batch = runtime.queue.claim_batch("w", models=None, max_images=4)
    assert [j.id for j in batch] == [a.id, b.id]  # c (n=4) does not fit in 4 images with a and b
    nxt = runtime.queue.claim_batch("w", models=None, max_images=4)
    assert [j.id for j in nxt] == [other.id]
    assert [j.id for j in runtime.queue.claim_batch("w", models=None, max_images=4)] == [c.id]


def test_priority_then_age(runtime) -> None:
    low = make(runtime, "low", size="64x64")
    high = make(runtime, "high", priority=5, size="128x128")
    assert status(runtime, low.id).queue_position == 2
    assert status(runtime, high.id).queue_position == 1
    assert [j.id for j in runtime.queue.claim_batch("w", models=None, max_images=1)] == [high.id]


def test_model_affinity(runtime) -> None:
    sq = make(runtime, "x", model="tiny-square")
    assert runtime.queue.claim_batch("w", models=["tiny"], max_images=8) == []
    assert [j.id for j in runtime.queue.claim_batch("w", models=["tiny-square"], max_images=8)] == [sq.id]


def test_concurrent_claimers_never_share_a_job(runtime) -> None:
    ids = {make(runtime, f"p{i}", size=f"{64 + 8 * (i % 4)}x64").id for i in range(24)}
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            while True:
                batch = runtime.queue.claim_batch(name, models=None, max_images=2)
                if not batch:
                    return
                with lock:
                    claimed.extend(j.id for j in batch)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(claimed) == sorted(ids)  # every job exactly once


@pytest.mark.parametrize("n", [1, 3])
def test_credits_recorded(runtime, n: int) -> None:
    assert make(runtime, n=n).credits == 2 * n


def test_task_numbers_are_stable_and_scoped(runtime) -> None:
    pid = runtime.default_project_id
    a, b = make(runtime, "a"), make(runtime, "b")
    na = runtime.repo.task_number(pid, a.id)
    nb = runtime.repo.task_number(pid, b.id)
    assert nb > na and runtime.repo.task_number(pid, a.id) == na
    assert runtime.repo.generation_by_number(pid, nb) == b.id
    other = runtime.repo.ensure_project("other")
    with pytest.raises(NotFound):
        runtime.repo.generation_by_number(other, nb)
    with pytest.raises(NotFound):
        runtime.repo.task_number(other, a.id)
