"""Budgets held by maintained counters (store/credits.py), on SQLite and PostgreSQL: concurrent creates
never overspend a project's or a key's budget; every transition in and out of the charged states keeps
the counters equal to the sum over the generations; setting a budget recounts; and on PostgreSQL a
create of a project without a budget or cap does not wait for another create in flight, while one with
a cap does."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from easel.domain.errors import QuotaExceeded
from easel.domain.generation import Status
from easel.domain.keys import Principal
from easel.domain.spec import GenerationSpec
from easel.store import credits
from easel.store.credits import CHARGED
from easel.store.tables import api_keys, generation_keys, generations, projects, utcnow

COST = 2.0  # the tiny model's credits per image (tests/conftest.py's catalog)


def spec(i: int = 0, **kw: Any) -> GenerationSpec:
    return GenerationSpec(prompt=f"p{i}", size="64x64", seed=i, **kw)


def counters(runtime: Any, pid: str, key_id: str | None = None) -> tuple[float, float]:
    """(the counter, the sum of charged credits over the generations) of the project, or of the key."""
    with runtime.repo.engine.connect() as conn:
        if key_id is None:
            counter = conn.execute(select(projects.c.spent_credits).where(projects.c.id == pid)).scalar_one()
            where = generations.c.project_id == pid
        else:
            key_row = select(api_keys.c.spent_credits).where(api_keys.c.id == key_id)
            counter = conn.execute(key_row).scalar_one()
            where = generations.c.id.in_(
                select(generation_keys.c.generation_id).where(generation_keys.c.key_id == key_id)
            )
        total = conn.execute(
            select(func.coalesce(func.sum(generations.c.credits), 0.0)).where(
                where, generations.c.status.in_(CHARGED)
            )
        ).scalar_one()
    return float(counter), float(total)


@pytest.mark.parametrize("whose", ["project", "key"])
def test_concurrent_creates_never_overspend_a_budget(runtime: Any, whose: str) -> None:
    pid = runtime.repo.ensure_project("tenant")
    budget = 5 * COST
    if whose == "project":
        runtime.keys.set_project_limits(pid, budget_credits=budget, rate_limit_per_hour=None)
        principal = runtime.principal(pid)
        key_id = None
    else:
        _, info = runtime.keys.create(pid, "k", ["generations:write"], budget_credits=budget)
        principal = Principal(pid, info.id, frozenset({"generations:write"}), 0, budget)
        key_id = info.id
    start = threading.Barrier(12)
    made: list[str] = []
    refused: list[QuotaExceeded] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def create_one(i: int) -> None:
        try:
            start.wait()
            gen = runtime.generations.submit(principal, spec(i))
            with lock:
                made.append(gen.id)
        except QuotaExceeded as e:
            with lock:
                refused.append(e)
        except BaseException as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=create_one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert (len(made), len(refused)) == (5, 7)
    assert counters(runtime, pid, key_id) == (budget, budget)


def test_every_transition_keeps_the_counters_equal_to_the_sum(runtime: Any) -> None:
    pid = runtime.repo.ensure_project("tenant")
    runtime.keys.set_project_limits(pid, budget_credits=1000, rate_limit_per_hour=None)
    _, info = runtime.keys.create(pid, "k", ["generations:write"], budget_credits=1000)
    principal = Principal(pid, info.id, frozenset({"generations:write"}), 0, 1000)

    def check(expected: float) -> None:
        assert counters(runtime, pid) == (expected, expected)
        assert counters(runtime, pid, info.id) == (expected, expected)

    jobs = [runtime.generations.submit(principal, spec(i, cancel_after=600)) for i in range(6)]
    check(6 * COST)
    runtime.repo.cancel(pid, jobs[0].id)  # queued -> canceled
    check(5 * COST)
    runtime.repo.soft_delete(pid, jobs[1].id)  # deleting a queued job cancels it
    check(4 * COST)
    past = utcnow() - timedelta(seconds=1)
    late = jobs[2].spec.model_copy(update={"deadline": past}).model_dump(mode="json")
    with runtime.repo.engine.begin() as conn:  # the deadline of jobs[2] passes: a read ends it
        values = {"deadline_at": past, "spec": late}
        conn.execute(update(generations).where(generations.c.id == jobs[2].id).values(**values))
    assert runtime.repo.get_generation(pid, jobs[2].id).status is Status.CANCELED
    check(3 * COST)
    claimed = runtime.queue.claim_batch("w", models=None, max_images=1)
    assert runtime.queue.fail(claimed[0], "boom", "it broke")  # running -> failed
    check(2 * COST)
    [running] = runtime.queue.claim_batch("w", models=None, max_images=1)
    runtime.repo.cancel(pid, running.id)  # running -> canceled
    check(1 * COST)
    runtime.repo.retry(pid, claimed[0].id, extra_attempts=1)  # failed -> queued: charged again
    check(2 * COST)
    runtime.repo.retry(pid, jobs[0].id, extra_attempts=1)
    check(3 * COST)
    runtime.repo.soft_delete(pid, jobs[0].id)  # a second refund of the same job, after its retry
    check(2 * COST)


def test_a_retry_over_budget_is_refused_and_changes_nothing(runtime: Any) -> None:
    pid = runtime.repo.ensure_project("tenant")
    runtime.keys.set_project_limits(pid, budget_credits=COST, rate_limit_per_hour=None)
    first = runtime.generations.submit(runtime.principal(pid), spec(1))
    runtime.repo.cancel(pid, first.id)
    runtime.generations.submit(runtime.principal(pid), spec(2))  # the credits first held came back
    with pytest.raises(QuotaExceeded, match="the project has 0 of its 2 left"):
        runtime.repo.retry(pid, first.id, extra_attempts=1)
    assert runtime.repo.get_generation(pid, first.id).status is Status.CANCELED
    assert counters(runtime, pid) == (COST, COST)


def test_setting_a_budget_recounts_what_was_spent_without_one(runtime: Any) -> None:
    pid = runtime.repo.ensure_project("tenant")
    jobs = [runtime.generations.submit(runtime.principal(pid), spec(i)) for i in range(3)]
    runtime.repo.cancel(pid, jobs[0].id)  # refunded while no counter was kept
    runtime.keys.set_project_limits(pid, budget_credits=3 * COST, rate_limit_per_hour=None)
    assert counters(runtime, pid) == (2 * COST, 2 * COST)
    runtime.generations.submit(runtime.principal(pid), spec(3))
    with pytest.raises(QuotaExceeded, match="has 0 of its 6 left"):
        runtime.generations.submit(runtime.principal(pid), spec(4))


def _in_flight(runtime: Any, pid: str) -> Any:
    """A create of `pid` in flight on PostgreSQL: its transaction has read the limits and been admitted,
    holding the locks a create holds until it commits; the caller commits."""
    conn = runtime.repo.engine.connect()
    tx = conn.begin()
    limits = credits.read_limits(conn, pid, None, 0)  # the project's own max_queued applies
    admit = {"live_within": timedelta(seconds=30), "now": utcnow()}
    credits.admit(conn, limits, COST, credits.QueueCaps(), "this API key", **admit)
    return conn, tx


@pytest.mark.parametrize("capped", [False, True])
def test_a_create_waits_for_another_only_when_a_cap_or_budget_needs_it(runtime: Any, capped: bool) -> None:
    if runtime.repo.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises every write transaction (one write lock)")
    pid = runtime.repo.ensure_project("tenant")
    runtime.keys.set_project_limits(
        pid, budget_credits=None, rate_limit_per_hour=None, max_queued=100 if capped else 0
    )
    conn, tx = _in_flight(runtime, pid)
    done = threading.Event()

    def create() -> None:
        runtime.generations.submit(runtime.principal(pid), spec(1))
        done.set()

    thread = threading.Thread(target=create)
    try:
        thread.start()
        if capped:
            assert not done.wait(1.0)  # the cap's count needs the project's row: it waits its turn
        else:
            assert done.wait(30)  # no budget, no cap: nothing to wait for
    finally:
        tx.commit()
        conn.close()
    assert done.wait(30)
    thread.join(30)
