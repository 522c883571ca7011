"""Scheduling through the API on SQLite and PostgreSQL: priority classes (and who may use "high"), caps
on queued jobs per key and per project (429 + Retry-After in each dialect's shape, never exceeded by
concurrent creates), deadlines by field and by header on several doors, queue position and ETA."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from easel.domain.errors import QueueFull
from easel.domain.generation import ListQuery, Status
from easel.domain.keys import Principal
from easel.domain.scheduling import DEADLINE_EXCEEDED, Priority
from easel.domain.spec import GenerationSpec
from easel.store.tables import utcnow
from easel.store.workers import WorkerRegistry
from support import key_headers

GEN = "/api/v1/generations"
OPENAI = "/v1/images/generations"
PLACEWISE = "/v1/ml/general/generate_image"
CLUB = {"X-Loyalty-Club-Slug": "club"}
SMALL = {"prompt": "a red circle", "size": "64x64"}


def project_key(runtime: Any, name: str = "tenant", **limits: Any) -> tuple[str, str]:
    """(plaintext key, project id) of a new project's key with every generation scope."""
    pid = runtime.repo.ensure_project(name)
    scopes = ["generations:write", "generations:read", "images:read"]
    plaintext, _ = runtime.keys.create(pid, "k", scopes, rate_limit_per_hour=0, **limits)
    return plaintext, pid


def create(
    api: TestClient, key: str | None = None, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    hdrs = (key_headers(key) if key else {}) | (headers or {})
    return api.post(GEN, json=SMALL | body, headers=hdrs)


# -- priority -------------------------------------------------------------------------------------------


def test_priority_classes_on_the_native_api(api: TestClient, runtime: Any) -> None:
    made = [create(api, priority=p).json()["data"] for p in ("low", "normal", "HIGH", 0, -3)]
    assert [g["priority"] for g in made] == ["low", "normal", "high", "normal", "low"]
    assert create(api).json()["data"]["priority"] == "normal"
    stored = runtime.repo.get_generation(runtime.default_project_id, made[0]["id"])
    assert stored.spec.priority == -1
    r = create(api, priority="urgent")
    assert r.status_code == 400
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["priority"]
    assert create(api, priority=True).status_code == 400
    assert create(api, priority=101).status_code == 400


def test_high_is_for_projects_the_server_admin_allows(api: TestClient, runtime: Any) -> None:
    key, pid = project_key(runtime)
    assert create(api, key, priority="low").status_code == 201
    r = create(api, key, priority="high")
    assert r.status_code == 403 and "allowHighPriority" in r.json()["error"]["message"]
    r = api.post(
        OPENAI, json={"prompt": "x", "size": "64x64"}, headers=key_headers(key) | {"X-Easel-Priority": "high"}
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    # a project admin may not grant it to itself
    admin_key, _ = runtime.keys.create(pid, "project admin", ["admin"], rate_limit_per_hour=0)
    patch = {"allowHighPriority": True}
    r = api.patch(f"/api/v1/admin/projects/{pid}", json=patch, headers=key_headers(admin_key))
    assert r.status_code == 403
    # the server admin does (the api client's key is the local project's admin)
    r = api.patch(f"/api/v1/admin/projects/{pid}", json=patch)
    assert r.status_code == 200 and r.json()["data"]["allowHighPriority"] is True
    assert create(api, key, priority="high").json()["data"]["priority"] == "high"


def test_high_priority_jobs_are_claimed_first(api: TestClient, runtime: Any) -> None:
    normal = [create(api, seed=i).json()["data"]["id"] for i in range(3)]
    high = create(api, priority="high", size="96x64").json()["data"]
    assert high["queuePosition"] == 1
    assert api.get(f"{GEN}/{normal[0]}").json()["data"]["queuePosition"] == 2
    [job] = runtime.queue.claim_batch("w", models=None, max_images=8)
    assert job.id == high["id"]


# -- caps -----------------------------------------------------------------------------------------------


def test_a_key_over_its_cap_is_a_429_with_retry_after_native_and_openai(
    api: TestClient, runtime: Any
) -> None:
    pid = runtime.repo.ensure_project("tenant")
    r = api.post(
        "/api/v1/admin/keys",
        json={"projectId": pid, "maxQueued": 2, "rateLimitPerHour": 0, "scopes": ["generations:write"]},
    )
    assert r.status_code == 201 and r.json()["data"]["maxQueued"] == 2
    key = r.json()["data"]["key"]
    assert [create(api, key, seed=i).status_code for i in range(2)] == [201, 201]
    r = create(api, key, seed=3)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    err = r.json()["error"]
    assert err["code"] == "QUEUE_LIMIT_EXCEEDED" and "the key's cap (2)" in err["message"]
    r = api.post(OPENAI, json={"prompt": "x", "size": "64x64"}, headers=key_headers(key))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "queue_limit_exceeded"
    assert r.json()["error"]["type"] == "requests"
    assert "the key's cap (2)" in r.json()["error"]["message"]
    # a job that starts frees a place
    runtime.queue.claim_batch("w", models=None, max_images=1)
    assert create(api, key, seed=4).status_code == 201


def test_the_project_cap_from_settings_and_from_the_admin(api: TestClient, runtime: Any) -> None:
    runtime.settings.max_queued_per_project = 3
    key, pid = project_key(runtime)
    other, _ = project_key(runtime, "other")
    assert [create(api, key, seed=i).status_code for i in range(3)] == [201] * 3
    r = create(api, key, seed=9)
    assert r.status_code == 429 and "the project's cap (3)" in r.json()["error"]["message"]
    r = api.post(PLACEWISE, json={"prompt": "x"}, headers=key_headers(key) | CLUB)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_limit_exceeded"
    assert "Retry-After" in r.headers
    assert create(api, other).status_code == 201  # another project's queue is its own
    r = api.patch(f"/api/v1/admin/projects/{pid}", json={"maxQueued": 4})
    assert r.status_code == 200 and r.json()["data"]["maxQueued"] == 4
    assert create(api, key, seed=10).status_code == 201
    assert create(api, key, seed=11).status_code == 429
    api.patch(f"/api/v1/admin/projects/{pid}", json={"maxQueued": 0})  # 0: no cap
    assert create(api, key, seed=12).status_code == 201


def test_retry_after_is_the_estimated_start_of_the_first_queued_job(api: TestClient, runtime: Any) -> None:
    key, _ = project_key(runtime, max_queued=1)
    seen(runtime)
    measured(runtime, seconds_per_step=2.5)  # tiny: 4 steps -> 10 s a job
    blocker = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="first", size="96x64"))
    assert blocker.status is Status.QUEUED
    assert create(api, key).status_code == 201
    r = create(api, key)
    assert r.status_code == 429 and r.headers["Retry-After"] == "10"  # behind the blocker's 10 s


@pytest.mark.parametrize("scope", ["key", "project"])
def test_concurrent_creates_never_exceed_the_cap(runtime: Any, scope: str) -> None:
    cap = 5
    pid = runtime.repo.ensure_project("tenant")
    if scope == "key":
        _, info = runtime.keys.create(pid, "k", ["generations:write"], max_queued=cap)
        principal = Principal(pid, info.id, frozenset({"generations:write"}), 0, None, max_queued=cap)
    else:
        runtime.keys.set_project_limits(pid, budget_credits=None, rate_limit_per_hour=None, max_queued=cap)
        principal = runtime.principal(pid)
    start = threading.Barrier(12)
    made: list[str] = []
    refused: list[QueueFull] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def create_one(i: int) -> None:
        spec = GenerationSpec(prompt=f"p{i}", size="64x64", seed=i)
        try:
            start.wait()
            gen = runtime.generations.submit(principal, spec)
            with lock:
                made.append(gen.id)
        except QueueFull as e:
            with lock:
                refused.append(e)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=create_one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(made) == cap and len(refused) == 12 - cap
    queued = runtime.repo.list_generations(pid, ListQuery(statuses=(Status.QUEUED,), limit=100)).total
    assert queued == cap


# -- deadlines and the scheduling headers ---------------------------------------------------------------


def test_native_cancel_after_deadline_and_the_header(api: TestClient, runtime: Any) -> None:
    by_field = create(api, cancelAfter=120).json()["data"]
    by_header = create(api, headers={"Cancel-After": "60"}).json()["data"]
    both = create(api, cancelAfter=600, headers={"Cancel-After": "5"}).json()["data"]  # the body wins
    at = (utcnow() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    absolute = create(api, deadline=at).json()["data"]
    assert absolute["deadline"].startswith(at[:19])
    from datetime import datetime

    def left(g: dict[str, Any]) -> float:
        return (datetime.fromisoformat(g["deadline"].replace("Z", "+00:00")) - utcnow()).total_seconds()

    assert 100 < left(by_field) <= 120 and 40 < left(by_header) <= 60 and 500 < left(both) <= 600
    for body, headers, field in (
        ({"cancelAfter": 0}, {}, "cancelAfter"),
        ({"cancelAfter": "10"}, {}, "cancelAfter"),
        ({"deadline": "2020-01-01T00:00:00Z"}, {}, "deadline"),
        ({}, {"Cancel-After": "soon"}, "Cancel-After"),
        ({}, {"Cancel-After": "-1"}, "Cancel-After"),
        ({}, {"Cancel-After": "0"}, "Cancel-After"),
    ):
        r = create(api, headers=headers, **body)
        assert r.status_code == 400, (body, headers, r.text)
        assert r.json()["error"]["fields"][0]["field"] == field


def test_openai_cancel_after_and_priority_headers(api: TestClient, runtime: Any) -> None:
    """No worker: the synchronous OpenAI call ends when the job misses its deadline (504, not charged)."""
    headers = {"Cancel-After": "1", "X-Easel-Priority": "low"}
    t0 = time.monotonic()
    r = api.post(OPENAI, json={"prompt": "a red circle", "size": "64x64"}, headers=headers)
    assert time.monotonic() - t0 < 15
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["code"] == DEADLINE_EXCEEDED and r.headers["x-should-retry"] == "false"
    [gen] = runtime.generations.list(runtime.default_project_id, ListQuery()).items
    assert gen.status is Status.CANCELED and gen.error_code == DEADLINE_EXCEEDED
    assert gen.spec.priority == Priority.LOW and gen.started_at is None
    usage = runtime.services.admin.usage(runtime.default_project_id, None, None, "day")
    assert usage.totals["generations"] == 0
    r = api.post(OPENAI, json={"prompt": "x"}, headers={"X-Easel-Priority": "urgent"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Easel-Priority"
    r = api.post(OPENAI, json={"prompt": "x"}, headers={"Cancel-After": "1e3"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Cancel-After"


def test_placewise_takes_the_scheduling_headers(api: TestClient, runtime: Any) -> None:
    headers = CLUB | {"X-Easel-Priority": "low", "Cancel-After": "90"}
    r = api.post(PLACEWISE, json={"prompt": "a red circle"}, headers=headers)
    assert r.status_code == 200, r.text
    number = r.json()["image_generation_task"]["id"]
    gen = runtime.generations.generation_by_number(runtime.default_project_id, number)
    assert gen.spec.priority == Priority.LOW
    assert gen.spec.deadline is not None
    assert 60 < (gen.spec.deadline - utcnow()).total_seconds() <= 90
    r = api.post(PLACEWISE, json={"prompt": "x"}, headers=CLUB | {"Cancel-After": "soon"})
    assert r.status_code == 400
    assert r.json()["error"]["fields"] == [
        {"field": "Cancel-After", "message": "must be a number of seconds (e.g. 30 or 2.5)"}
    ]


def test_a_missed_deadline_reads_as_canceled_on_each_door(api: TestClient, runtime: Any) -> None:
    gid = create(api, headers={"Cancel-After": "0.2"}).json()["data"]["id"]
    time.sleep(0.4)
    got = api.get(f"{GEN}/{gid}").json()["data"]  # no worker: the read ends it
    assert (got["status"], got["errorCode"], got["startedAt"]) == ("canceled", DEADLINE_EXCEEDED, None)
    assert got["queuePosition"] is None and got["etaSeconds"] is None
    usage = api.get("/api/v1/usage").json()["data"]
    assert usage["totals"]["generations"] == 0  # not charged
    r = api.post(
        "/social-publisher/v1/generate-image",
        json={"userInput": "x", "imageUrl": "http://example.invalid/a.png"},
        headers={"Cancel-After": "nope"},
    )
    assert r.status_code == 400
    violations = r.json()["details"]["validationError"]["fieldViolations"]
    assert violations[0]["field"] == "Cancel-After"


# -- queue position and ETA -----------------------------------------------------------------------------


def seen(runtime: Any, name: str = "w-live") -> None:
    WorkerRegistry(runtime.repo.engine).seen(name, hostname="h", pid=1, models=[], started_at=utcnow())


def measured(runtime: Any, seconds_per_step: float, model: str = "tiny") -> None:
    """Complete one job of `model` so that its speed is measured (the only model measured: the others
    are estimated at the mean of the measured ones)."""
    gen = runtime.generations.submit(
        runtime.principal(), GenerationSpec(prompt="m", model=model, size="64x64")
    )
    [job] = runtime.queue.claim_batch("m", models=[model], max_images=1)
    assert job.id == gen.id
    assert runtime.queue.complete(job, [], int(seconds_per_step * job.spec.steps * 1000))


def test_queue_position_and_eta(api: TestClient, runtime: Any) -> None:
    ids = [create(api, seed=i).json()["data"]["id"] for i in range(3)]
    first = api.get(f"{GEN}/{ids[0]}").json()["data"]
    assert first["queuePosition"] == 1 and first["etaSeconds"] is None  # no live worker, nothing measured
    measured(runtime, seconds_per_step=0.5, model="tiny-square")  # tiny (4 steps) at the mean: 2 s a job
    seen(runtime)
    got = [api.get(f"{GEN}/{i}").json()["data"] for i in ids]
    assert [g["queuePosition"] for g in got] == [1, 2, 3]
    assert [g["etaSeconds"] for g in got] == [2.0, 4.0, 6.0]
    listed = {g["id"]: g for g in api.get(GEN, params={"status": "pending"}).json()["data"]}
    assert [(listed[i]["queuePosition"], listed[i]["etaSeconds"]) for i in ids] == [
        (1, 2.0),
        (2, 4.0),
        (3, 6.0),
    ]
    # one starts: it has its own 4 steps left; the others wait behind it
    [job] = runtime.queue.claim_batch("w", models=None, max_images=1)
    assert job.id == ids[0]
    seen(runtime)
    running = api.get(f"{GEN}/{ids[0]}").json()["data"]
    assert (running["status"], running["queuePosition"], running["etaSeconds"]) == ("processing", None, 2.0)
    runtime.queue.progress([job], 2, 4)
    assert api.get(f"{GEN}/{ids[0]}").json()["data"]["etaSeconds"] == 1.0
    got = [api.get(f"{GEN}/{i}").json()["data"] for i in ids[1:]]
    assert [(g["queuePosition"], g["etaSeconds"]) for g in got] == [(1, 3.0), (2, 5.0)]
    # a second live worker shares the wait, not a job's own run
    seen(runtime)
    seen(runtime, "w-2")
    assert [api.get(f"{GEN}/{i}").json()["data"]["etaSeconds"] for i in ids[1:]] == [2.5, 3.5]


def test_position_and_eta_are_bounded_counts(
    api: TestClient, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far back in a long queue the position is capped (POSITION_CAP + 1) and the ETA is the work of a
    sample of the jobs ahead scaled to their count: neither costs more as the queue grows."""
    from easel.store import scheduling

    monkeypatch.setattr(scheduling, "POSITION_CAP", 3)
    monkeypatch.setattr(scheduling, "ETA_SAMPLE", 2)
    ids = [create(api, seed=i).json()["data"]["id"] for i in range(6)]
    measured(runtime, seconds_per_step=0.5, model="tiny-square")  # 2 s a job of tiny
    seen(runtime)
    got = [api.get(f"{GEN}/{i}").json()["data"] for i in ids]
    assert [g["queuePosition"] for g in got] == [1, 2, 3, 4, 4, 4]
    # exact while the sample holds every job ahead; then the sample's work scaled to the (capped) count
    assert [g["etaSeconds"] for g in got] == [2.0, 4.0, 6.0, 8.0, 8.0, 8.0]
    # A page of the list ranks its queued rows in one pass: the same figures.
    listed = {g["id"]: g for g in api.get(GEN, params={"status": "pending"}).json()["data"]}
    assert [(listed[i]["queuePosition"], listed[i]["etaSeconds"]) for i in ids] == [
        (g["queuePosition"], g["etaSeconds"]) for g in got
    ]


def test_the_speed_is_a_moving_average_per_step_and_image(runtime: Any) -> None:
    from easel.store import scheduling

    measured(runtime, seconds_per_step=1.0)
    # a batch of 2 images, 4 steps, 4 s: 0.5 s per step and image
    for i in range(2):
        runtime.generations.submit(runtime.principal(), GenerationSpec(prompt=f"b{i}", size="32x32", seed=i))
    jobs = runtime.queue.claim_batch("w", models=None, max_images=8)
    assert len(jobs) == 2 and all(j.batch_images == 2 for j in jobs)
    assert runtime.queue.complete(jobs[0], [], 4000)
    with runtime.repo.engine.connect() as conn:
        assert scheduling.timings(conn) == {"tiny": pytest.approx(0.7 * 1.0 + 0.3 * 0.5)}
