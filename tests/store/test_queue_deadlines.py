"""Request deadlines on both databases: a job that has not started by its deadline ends canceled
(`deadline_exceeded`) without running, is not charged, and its webhook is written; the claim never
starts one (even when its sweep is skipped), and reads end overdue jobs when no worker claims."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from easel.domain.errors import QuotaExceeded, ValidationFailed
from easel.domain.generation import ListQuery, Status
from easel.domain.scheduling import DEADLINE_EXCEEDED
from easel.domain.spec import GenerationSpec
from easel.store import queue as queue_module
from easel.store.tables import generations, utcnow, webhook_messages


def make(runtime: Any, **kw: Any) -> Any:
    kw.setdefault("size", "64x64")
    return runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", **kw))


def overdue(runtime: Any, gid: str) -> None:
    """Move a queued job's deadline into the past (as if its Cancel-After had elapsed)."""
    past = utcnow() - timedelta(seconds=1)
    gen = runtime.repo.get_generation(runtime.default_project_id, gid)
    spec = gen.spec.model_copy(update={"deadline": past}).model_dump(mode="json")
    with runtime.repo.engine.begin() as conn:
        conn.execute(update(generations).where(generations.c.id == gid).values(deadline_at=past, spec=spec))


def raw(runtime: Any, gid: str) -> Any:
    with runtime.repo.engine.connect() as conn:
        return conn.execute(select(generations).where(generations.c.id == gid)).one()


def test_cancel_after_becomes_a_deadline(runtime) -> None:
    before = utcnow()
    gen = make(runtime, cancel_after=30)
    assert gen.spec.cancel_after is None
    assert before + timedelta(seconds=30) <= gen.spec.deadline <= utcnow() + timedelta(seconds=30)
    assert raw(runtime, gen.id).deadline_at == gen.spec.deadline
    # both given: the earlier wins
    both = make(runtime, cancel_after=300, deadline=utcnow() + timedelta(seconds=60))
    assert both.spec.deadline <= utcnow() + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"deadline": "past"}, "deadline"),
        ({"deadline": "far"}, "deadline"),
        ({"cancel_after": 0}, "cancel_after"),
        ({"cancel_after": -5}, "cancel_after"),
        ({"cancel_after": 8 * 24 * 3600}, "cancel_after"),
    ],
)
def test_a_past_or_invalid_deadline_is_a_400_and_writes_nothing(runtime, kw, field) -> None:
    if kw.get("deadline") == "past":
        kw = {"deadline": utcnow() - timedelta(seconds=1)}
    elif kw.get("deadline") == "far":
        kw = {"deadline": utcnow() + timedelta(days=8)}
    with pytest.raises(ValidationFailed) as e:
        make(runtime, **kw)
    assert e.value.param == field
    assert runtime.repo.list_generations(runtime.default_project_id, ListQuery()).total == 0


def test_an_overdue_job_is_never_claimed_and_ends_canceled_with_its_webhook(runtime) -> None:
    late = make(runtime, cancel_after=60, webhook_url="http://hooks.example/easel")
    other = make(runtime)
    overdue(runtime, late.id)
    assert [j.id for j in runtime.queue.claim_batch("w", models=None, max_images=8)] == [other.id]
    gen = runtime.repo.get_generation(runtime.default_project_id, late.id)
    assert gen.status is Status.CANCELED and gen.error_code == DEADLINE_EXCEEDED
    assert gen.started_at is None and gen.attempts == 0  # it never ran
    with runtime.repo.engine.connect() as conn:
        msgs = conn.execute(select(webhook_messages).where(webhook_messages.c.generation_id == late.id)).all()
    assert [m.event_type for m in msgs] == ["generation.canceled"]
    body = json.loads(msgs[0].body)
    assert body["data"]["error"]["code"] == DEADLINE_EXCEEDED


def test_the_claim_checks_the_deadline_itself(runtime, monkeypatch) -> None:
    """Even with its sweep skipped, the claim does not start an overdue job."""
    late = make(runtime, cancel_after=60)
    overdue(runtime, late.id)
    monkeypatch.setattr(queue_module, "expire_overdue", lambda *a, **k: [])
    assert runtime.queue.claim_batch("w", models=None, max_images=8) == []
    assert raw(runtime, late.id).status == Status.QUEUED.value
    monkeypatch.undo()
    # and a read ends it (no worker needed)
    assert runtime.generations.get(runtime.default_project_id, late.id).status is Status.CANCELED


def test_reads_end_overdue_jobs_when_no_worker_claims(runtime) -> None:
    a, b = make(runtime, cancel_after=60), make(runtime, cancel_after=60)
    keep = make(runtime, cancel_after=600)
    overdue(runtime, a.id)
    overdue(runtime, b.id)
    gens = runtime.generations.list(runtime.default_project_id, ListQuery()).items
    by_id = {g.id: g for g in gens}
    assert by_id[a.id].status is by_id[b.id].status is Status.CANCELED
    assert by_id[keep.id].status is Status.QUEUED and by_id[keep.id].queue_position == 1


def test_an_overdue_job_is_not_charged(runtime) -> None:
    runtime.keys.set_project_limits(runtime.default_project_id, budget_credits=2, rate_limit_per_hour=None)
    late = make(runtime, cancel_after=60)  # tiny costs 2: the whole budget, reserved while queued
    with pytest.raises(QuotaExceeded):
        make(runtime)
    overdue(runtime, late.id)
    assert runtime.generations.get(runtime.default_project_id, late.id).status is Status.CANCELED
    assert make(runtime).status is Status.QUEUED  # its credits came back
    usage = runtime.services.admin.usage(runtime.default_project_id, None, None, "day")
    assert usage.totals["generations"] == 1


def test_a_started_job_is_past_its_deadline_question(runtime) -> None:
    """The deadline is about starting: once claimed, a job runs to its end even if the deadline passes."""
    gen = make(runtime, cancel_after=60)
    [job] = runtime.queue.claim_batch("w", models=None, max_images=8)
    overdue_running = utcnow() - timedelta(seconds=1)
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(generations).where(generations.c.id == gen.id).values(deadline_at=overdue_running)
        )
    assert runtime.queue.claim_batch("w2", models=None, max_images=8) == []  # the sweep leaves it alone
    assert runtime.queue.complete(job, [], 10)
    assert runtime.generations.get(runtime.default_project_id, gen.id).status is Status.SUCCEEDED


def test_retry_of_an_expired_job_drops_its_deadline(runtime) -> None:
    late = make(runtime, cancel_after=60)
    overdue(runtime, late.id)
    assert runtime.generations.get(runtime.default_project_id, late.id).status is Status.CANCELED
    again = runtime.generations.retry(runtime.principal(), late.id)
    assert again.status is Status.QUEUED and again.spec.deadline is None
    assert raw(runtime, late.id).deadline_at is None
    assert [j.id for j in runtime.queue.claim_batch("w", models=None, max_images=8)] == [late.id]
