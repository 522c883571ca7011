"""The project-wide event stream (GET /api/v1/events) over real HTTP: every change of the project's
generations as it happens, nothing of another project's, and resuming with Last-Event-ID."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from test_events import Event, create, http, sse  # noqa: F401 - `http` is the fixture

from easel.domain.spec import GenerationSpec
from support import key_headers


def test_the_project_stream_tells_every_change_and_resumes(
    http: httpx.Client,  # noqa: F811 - the fixture
    runtime: Any,
    caplog: Any,
) -> None:
    other = runtime.repo.ensure_project("tenant-b")
    worker = runtime.make_worker()
    seen: list[Event] = []
    with http.stream("GET", "/api/v1/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        mine = create(http, steps=4, seed=2)
        runtime.generations.submit(runtime.principal(other), GenerationSpec(prompt="theirs", size="64x64"))
        runner = threading.Thread(target=lambda: [worker.run_once() for _ in range(2)])
        for ev in sse(r):
            seen.append(ev)
            if len(seen) == 1:
                runner.start()
            if ev.data["status"] in ("success", "failed", "canceled"):  # the end: never wait past it
                break
    runner.join(60)
    assert {e.name for e in seen} == {"generation"}
    assert {e.data["id"] for e in seen} == {mine["id"]}  # the other project's job is not told
    statuses = [e.data["status"] for e in seen]
    assert statuses[-1] == "success", (seen[-1].data.get("errorMessage"), caplog.text[-3000:])
    # In order; a state that lasted less than one read (0.5 s) may be told only as the next one.
    assert statuses[0] == "pending" and statuses[-1] == "success"
    order = ["pending", "processing", "success"]
    assert [order.index(x) for x in statuses] == sorted(order.index(x) for x in statuses)
    assert seen[-1].data["outputImages"] and seen[-1].data["progress"]["step"] == 4
    ids = [e.id or "" for e in seen]
    assert ids == sorted(ids, key=lambda i: int(i.split(".")[0])) and len(set(ids)) == len(ids)

    # Reconnecting after the first event: what changed since, not the first event again.
    with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": ids[0]}) as r:
        again = next(sse(r))
    assert again.data["id"] == mine["id"] and again.data["status"] == "success" and again.id == ids[-1]


def test_the_project_stream_needs_a_key_with_read_scope(live_server_no_worker: str, runtime: Any) -> None:
    assert httpx.get(f"{live_server_no_worker}/api/v1/events").status_code == 401
    writer, _ = runtime.keys.create(
        runtime.default_project_id, "w", ["generations:write"], rate_limit_per_hour=0
    )
    r = httpx.get(f"{live_server_no_worker}/api/v1/events", headers=key_headers(writer))
    assert r.status_code == 403
