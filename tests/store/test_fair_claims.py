"""The fair claim order on both databases: projects take turns within a priority class (the head of a
batch and its compatible mates), higher classes first, several workers claiming at once, and the claim's
queries served by indexes (no scan of the queue, no sort)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, text

from easel.domain.keys import Principal
from easel.domain.scheduling import Priority
from easel.domain.spec import GenerationSpec
from easel.store import scheduling
from easel.store.db import make_engine
from easel.store.queue import JobQueue
from easel.store.tables import generations, queue_clock, utcnow


def project(runtime: Any, name: str) -> Principal:
    return runtime.principal(runtime.repo.ensure_project(name))


def make(runtime: Any, who: Principal, n_jobs: int, **kw: Any) -> list[str]:
    kw.setdefault("size", "64x64")
    return [
        runtime.generations.submit(who, GenerationSpec(prompt=f"job {i}", seed=i, **kw)).id
        for i in range(n_jobs)
    ]


def claim(runtime: Any, max_images: int = 4, queue: JobQueue | None = None) -> list[str]:
    q = queue or runtime.queue
    return [j.id for j in q.claim_batch("w", models=None, max_images=max_images)]


def test_one_job_of_another_project_is_in_the_next_batch_behind_300(runtime) -> None:
    a, b = project(runtime, "a"), project(runtime, "b")
    a_jobs = make(runtime, a, 300)
    first = claim(runtime)
    assert first == a_jobs[:4]  # only A had jobs: its oldest four
    [b_job] = make(runtime, b, 1, size="96x64")  # not even compatible with A's jobs
    assert claim(runtime) == [b_job]  # B's job is the next batch, not the 76th
    assert claim(runtime) == a_jobs[4:8]


def test_a_compatible_newcomer_rides_in_the_very_next_batch(runtime) -> None:
    a, b = project(runtime, "a"), project(runtime, "b")
    a_jobs = make(runtime, a, 300)
    [b_job] = make(runtime, b, 1)  # same model, size and steps as A's: one batch key
    assert claim(runtime) == [a_jobs[0], b_job, *a_jobs[1:3]]


def test_compatible_jobs_fill_a_batch_round_robin_across_projects(runtime) -> None:
    """A batch takes one compatible job of each waiting project in turn: one project cannot fill every
    batch while others wait with compatible jobs."""
    a, b, c = project(runtime, "a"), project(runtime, "b"), project(runtime, "c")
    a_jobs = make(runtime, a, 20)
    b_jobs = make(runtime, b, 20)
    c_jobs = make(runtime, c, 20)
    assert claim(runtime, 6) == [a_jobs[0], b_jobs[0], c_jobs[0], a_jobs[1], b_jobs[1], c_jobs[1]]
    assert claim(runtime, 3) == [a_jobs[2], b_jobs[2], c_jobs[2]]


def test_incompatible_jobs_are_not_batched_but_keep_their_turn(runtime) -> None:
    a, b = project(runtime, "a"), project(runtime, "b")
    a_jobs = make(runtime, a, 6)
    b_jobs = make(runtime, b, 3, size="96x64")
    assert claim(runtime) == a_jobs[:4]  # A's head and its compatible mates (B's are another key)
    assert claim(runtime) == b_jobs  # then B's turn: all three of its compatible jobs
    assert claim(runtime) == a_jobs[4:]


def test_higher_classes_first_round_robin_within_each(runtime) -> None:
    a, b, c = project(runtime, "a"), project(runtime, "b"), project(runtime, "c")
    normal = make(runtime, a, 3)
    low = make(runtime, c, 1, priority=Priority.LOW)
    b_high = make(runtime, b, 2, priority=Priority.HIGH, size="96x64")
    c_high = make(runtime, c, 2, priority=Priority.HIGH, size="64x96")
    order = [jid for _ in range(8) for jid in claim(runtime, 1)]
    assert order == [b_high[0], c_high[0], b_high[1], c_high[1], *normal, *low]
    stored = runtime.repo.get_generation(c.project_id, low[0])
    assert stored.spec.priority == Priority.LOW == -1


def test_legacy_integer_priorities_become_classes(runtime) -> None:
    a = project(runtime, "a")
    [gid] = make(runtime, a, 1, priority=7)
    assert runtime.repo.get_generation(a.project_id, gid).spec.priority == Priority.HIGH


def test_rounds_follow_the_clock(runtime) -> None:
    """A project with nothing queued joins at the clock (the round claimed last); one with queued jobs
    continues after its last; the clock only moves forward."""
    a, b = project(runtime, "a"), project(runtime, "b")
    a_jobs = make(runtime, a, 10)

    def rounds(who: Principal) -> list[int]:
        with runtime.repo.engine.connect() as conn:
            q = select(generations.c.fair_tag).where(generations.c.project_id == who.project_id)
            return sorted(conn.execute(q.order_by(generations.c.created_at)).scalars())

    assert rounds(a) == list(range(10))
    for _ in range(3):
        claim(runtime, 1)
    with runtime.repo.engine.connect() as conn:
        clock = conn.execute(select(queue_clock.c.round).where(queue_clock.c.priority == 0)).scalar()
    assert clock == 2
    b_jobs = make(runtime, b, 2)
    assert rounds(b) == [2, 3]
    # b0 (round 2) before a3 (round 3); then a3 and b1 share round 3: the older first
    assert [jid for _ in range(3) for jid in claim(runtime, 1)] == [b_jobs[0], a_jobs[3], b_jobs[1]]


def test_retry_joins_the_turns_again(runtime) -> None:
    """A retried job takes the next turn of its project (it used to keep its age, and with it the head
    of the queue, whatever its project had queued meanwhile)."""
    a, b = project(runtime, "a"), project(runtime, "b")
    failed, *a_jobs = make(runtime, a, 3)
    [job] = runtime.queue.claim_batch("w", models=None, max_images=1)
    assert runtime.queue.fail(job, "generation_failed", "boom")
    b_jobs = make(runtime, b, 3)
    runtime.generations.retry(a, failed)
    order = [jid for _ in range(6) for jid in claim(runtime, 1)]
    assert order == [b_jobs[0], a_jobs[0], b_jobs[1], a_jobs[1], b_jobs[2], failed]


def test_several_workers_with_their_own_engines_stay_fair_and_never_share(runtime, settings) -> None:
    """Three workers (threads, each with its own engine and connection pool) claim concurrently: no job
    is claimed twice, every job is claimed, and the small projects' jobs are all claimed early, not
    after the big project's backlog."""
    big, s1, s2 = project(runtime, "big"), project(runtime, "small1"), project(runtime, "small2")
    big_jobs = make(runtime, big, 60)
    small = make(runtime, s1, 5, size="96x64") + make(runtime, s2, 5, size="64x96")
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker(name: str) -> None:
        engine = make_engine(settings.resolved_database_url)
        queue = JobQueue(engine, lease_seconds=30, render_event=runtime.queue.render_event)
        try:
            start.wait()
            while True:
                batch = [j.id for j in queue.claim_batch(name, models=None, max_images=2)]
                if not batch:
                    return
                with lock:
                    claimed.extend(batch)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert Counter(claimed) == Counter(big_jobs + small)  # each exactly once
    # Round-robin across three projects puts the 10 small jobs within the first ~30 claimed; allow for
    # the interleaving of three concurrent claimers (a batch each).
    last_small = max(claimed.index(j) for j in small)
    assert last_small < 36, (last_small, claimed)


def _explain(conn: Any, stmt: Any) -> str:
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
    return "\n".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))


@pytest.mark.parametrize("batch_key", [None, "tiny|text-to-image|64|64|4|4.0|None|"])
def test_the_claim_walks_an_index_in_claim_order(runtime, batch_key) -> None:
    """The head's and the mates' selects are ordered index scans (no sort, no scan of the table), so a
    claim costs the same with 10 or 100,000 jobs queued."""
    make(runtime, project(runtime, "a"), 5)
    queue = runtime.queue
    with runtime.repo.engine.begin() as conn:
        for stmt in queue._claimable(utcnow(), None, batch_key, 4):
            plan = _explain(conn, stmt)
            want = "ix_generations_claim" if batch_key is None else "ix_generations_batch"
            assert want in plan, plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
            assert "Seq Scan" not in plan and "SCAN generations\n" not in plan + "\n", plan


def test_a_create_finds_its_round_by_index(runtime) -> None:
    a = project(runtime, "a")
    make(runtime, a, 3)
    with runtime.repo.engine.begin() as conn:
        for status in ("queued", "running"):
            plan = _explain(conn, select(scheduling.latest_round(a.project_id, status, 0)))
            assert "ix_generations_project_round" in plan, plan
        assert scheduling.next_round(conn, a.project_id, 0) == 3
