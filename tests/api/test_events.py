"""Progress as server-sent events over real HTTP, cancel while streaming, and retry (native API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from easel.api.native import events as events_module
from support import key_headers


class Event:
    def __init__(self, name: str, ident: str | None, data: Any) -> None:
        self.name, self.id, self.data = name, ident, data

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.id!r}, {self.data!r})"


def sse(response: httpx.Response, comments: list[str] | None = None) -> Iterator[Event]:
    """Parse a text/event-stream into events (comment lines go to `comments`)."""
    name: str = "message"
    ident: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(name, ident, json.loads("\n".join(data)))
            name, ident, data = "message", None, []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                ident = value
            elif field == "data":
                data.append(value)


@pytest.fixture
def http(live_server_no_worker: str, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server_no_worker, headers=key_headers(admin_key), timeout=60) as c:
        yield c


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"} | body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


class RecordingQueue:
    """The runtime's JobQueue, recording every step a worker tries to record."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.steps: list[int] = []

    def progress(self, jobs: Any, step: int, total: int) -> set[str]:
        self.steps.append(step)
        held: set[str] = self._queue.progress(jobs, step, total)
        return held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def test_queue_position_then_every_step_then_succeeded(http: httpx.Client, runtime: Any) -> None:
    ahead = create(http, prompt="first in line", steps=1)
    gen = create(http, steps=8, seed=4)
    worker = runtime.make_worker()
    runner = threading.Thread(target=lambda: [worker.run_once() for _ in range(2)])
    seen: list[Event] = []
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        for ev in sse(r):
            seen.append(ev)
            if len(seen) == 1:
                assert (ev.name, ev.data) == ("queued", {"position": 2})
                http.post(f"/api/v1/generations/{ahead['id']}/cancel")
            if len(seen) == 2:
                assert (ev.name, ev.data) == ("queued", {"position": 1})
                runner.start()
    runner.join(60)
    names = [e.name for e in seen]
    assert names == ["queued", "queued"] + ["progress"] * 8 + ["succeeded"], seen
    assert [e.data for e in seen[2:-1]] == [{"step": i, "total": 8} for i in range(1, 9)]
    # Each id is `<step>.<previews>` told so far (a reconnect with Last-Event-ID resumes there).
    assert [e.id for e in seen] == ["0.0", "0.0"] + [f"{i}.0" for i in range(1, 9)] + ["8.0"]
    final = seen[-1].data
    record = http.get(f"/api/v1/generations/{gen['id']}").json()["data"]
    assert final["status"] == "success" and final["progress"] == {"step": 8, "total": 8}
    assert final["outputImageIds"] == record["outputImageIds"] and len(final["outputImageIds"]) == 1
    assert {k: v for k, v in final.items() if k != "outputImage" and k != "outputImages"} == {
        k: v for k, v in record.items() if k != "outputImage" and k != "outputImages"
    }
    assert http.get(final["outputImage"]["storageUrl"]).status_code == 200


def test_cancel_while_streaming_stops_within_one_step(http: httpx.Client, runtime: Any) -> None:
    gen = create(http, size="256x256", steps=200)
    worker = runtime.make_worker()
    worker.queue = recording = RecordingQueue(worker.queue)
    runner = threading.Thread(target=worker.run_once)
    seen: list[Event] = []
    step_at_cancel = None
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        for ev in sse(r):
            seen.append(ev)
            if ev.name == "queued":
                runner.start()
            if ev.name == "progress" and ev.data["step"] >= 2 and step_at_cancel is None:
                canceled = http.post(f"/api/v1/generations/{gen['id']}/cancel").json()["data"]
                assert canceled["status"] == "canceled"
                step_at_cancel = canceled["progress"]["step"]
    runner.join(60)
    assert not runner.is_alive() and step_at_cancel is not None
    assert seen[-1].name == "canceled" and seen[-1].data["status"] == "canceled"
    assert seen[-1].data["outputImages"] == [] and seen[-1].data["errorCode"] == "canceled"
    assert seen[-1].data["progress"]["step"] <= step_at_cancel + 1
    # The worker tried to record at most one more step after the cancel, then stopped.
    assert max(recording.steps) <= step_at_cancel + 1 < 200
    steps = [e.data["step"] for e in seen if e.name == "progress"]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] <= step_at_cancel + 1


def test_a_worker_in_another_process_is_seen_by_reading_the_store(http: httpx.Client, runtime: Any) -> None:
    """No in-process events at all (the worker publishes nowhere): steps and the end still arrive."""
    gen = create(http, size="128x128", steps=40)
    worker = runtime.make_worker()
    worker.publish = lambda event: None
    runner = threading.Thread(target=worker.run_once)
    seen: list[Event] = []
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        for ev in sse(r):
            seen.append(ev)
            if ev.name == "queued":
                runner.start()
    runner.join(60)
    assert seen[0].name == "queued" and seen[-1].name == "succeeded"
    steps = [e.data["step"] for e in seen if e.name == "progress"]
    assert steps and steps == sorted(set(steps)) and steps[-1] <= 40
    assert all(e.data["total"] == 40 for e in seen if e.name == "progress")


def test_with_the_in_process_worker(live_server: str, admin_key: str) -> None:
    """The usual `easel serve`: the job may start before the stream does; steps then go on from there."""
    with httpx.Client(base_url=live_server, headers=key_headers(admin_key), timeout=60) as http:
        gen = create(http, steps=8)
        with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
            seen = list(sse(r))
    assert seen[-1].name == "succeeded" and seen[-1].data["status"] == "success"
    steps = [e.data["step"] for e in seen if e.name == "progress"]
    if steps:  # consecutive from wherever the stream came in
        assert steps == list(range(steps[0], 9))
    assert {e.name for e in seen[:-1]} <= {"queued", "progress"}


def test_a_finished_generation_streams_its_final_event_only(http: httpx.Client, runtime: Any) -> None:
    gen = create(http)
    assert runtime.make_worker().run_once()
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        seen = list(sse(r))
    assert [e.name for e in seen] == ["succeeded"] and seen[0].data["id"] == gen["id"]
    canceled = create(http)
    http.post(f"/api/v1/generations/{canceled['id']}/cancel")
    with http.stream("GET", f"/api/v1/generations/{canceled['id']}/events") as r:
        assert [e.name for e in sse(r)] == ["canceled"]


def test_failed_is_the_final_event(http: httpx.Client, runtime: Any) -> None:
    gen = create(http)

    class Broken:
        def generate(self, request: Any, on_step: Any) -> Any:
            on_step(1, 4)
            raise RuntimeError("out of memory")

    worker = runtime.make_worker(backend=Broken())
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        seen = []
        for ev in sse(r):
            seen.append(ev)
            if ev.name == "queued":
                threading.Thread(target=worker.run_once).start()
    assert [e.name for e in seen] == ["queued", "progress", "failed"]
    assert seen[-1].data["errorCode"] == "generation_failed"


def test_heartbeat_comments_while_waiting(
    http: httpx.Client, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "HEARTBEAT_SECONDS", 0.2)
    gen = create(http)
    lines: list[str] = []
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        for line in r.iter_lines():
            lines.append(line)
            if lines.count(": keep-alive") == 3:
                break
    events = [line for line in lines if line.startswith("event:")]
    assert events == ["event: queued"]  # nothing changed meanwhile: only comments after the first event
    assert lines.index("event: queued") < lines.index(": keep-alive")


def test_a_client_that_disconnects_ends_its_stream(http: httpx.Client, runtime: Any) -> None:
    import time

    gen = create(http)
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        stream = sse(r)  # (kept: dropping the parser closes the connection)
        assert next(stream).name == "queued"
        assert runtime.events._subs.get(gen["id"])  # subscribed while streaming
    deadline = time.monotonic() + 10
    while gen["id"] in runtime.events._subs:  # unsubscribed once the client went away
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_events_need_a_key_and_the_project(
    http: httpx.Client, runtime: Any, live_server_no_worker: str
) -> None:
    gen = create(http)
    r = httpx.get(f"{live_server_no_worker}/api/v1/generations/{gen['id']}/events")
    assert r.status_code == 401 and r.json()["success"] is False
    other = runtime.repo.ensure_project("tenant-b")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    r = http.get(f"/api/v1/generations/{gen['id']}/events", headers=key_headers(b_key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "GENERATION_NOT_FOUND"
    assert http.get("/api/v1/generations/nope/events").status_code == 404


# -- retry --------------------------------------------------------------------------------------------


class Broken:
    def generate(self, request: Any, on_step: Any) -> Any:
        raise RuntimeError("out of memory")


def test_retry_a_failed_generation_runs_it_again_with_its_seed(http: httpx.Client, runtime: Any) -> None:
    gen = create(http, seed=77)
    runtime.make_worker(backend=Broken()).run_once()
    failed = http.get(f"/api/v1/generations/{gen['id']}").json()["data"]
    assert failed["status"] == "failed" and failed["attempts"] == 1

    r = http.post(f"/api/v1/generations/{gen['id']}/retry")
    assert r.status_code == 200, r.text
    again = r.json()["data"]
    assert again["id"] == gen["id"] and again["status"] == "pending" and again["seed"] == 77
    assert again["errorCode"] is None and again["errorMessage"] is None and again["finishedAt"] is None
    assert again["progress"]["step"] == 0 and again["queuePosition"] == 1

    assert runtime.make_worker().run_once()
    done = http.get(f"/api/v1/generations/{gen['id']}").json()["data"]
    assert done["status"] == "success" and done["attempts"] == 2 and done["retryCount"] == 1
    # The same picture as a first run with that seed.
    fresh = create(http, seed=77)
    assert runtime.make_worker().run_once()
    fresh = http.get(f"/api/v1/generations/{fresh['id']}").json()["data"]
    assert fresh["outputImage"]["sha256"] == done["outputImage"]["sha256"]


def test_retry_canceled_and_conflicts(http: httpx.Client, runtime: Any) -> None:
    gen = create(http)
    r = http.post(f"/api/v1/generations/{gen['id']}/retry")
    assert r.status_code == 409 and r.json()["error"]["code"] == "NOT_RETRYABLE"  # still pending
    http.post(f"/api/v1/generations/{gen['id']}/cancel")
    key = {"Idempotency-Key": "retry-1"}
    first = http.post(f"/api/v1/generations/{gen['id']}/retry", headers=key)
    assert first.status_code == 200 and first.json()["data"]["status"] == "pending"
    replay = http.post(f"/api/v1/generations/{gen['id']}/retry", headers=key)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert runtime.make_worker().run_once()
    r = http.post(f"/api/v1/generations/{gen['id']}/retry")
    assert r.status_code == 409  # succeeded
    assert http.post("/api/v1/generations/nope/retry").status_code == 404
    other = runtime.repo.ensure_project("tenant-b")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    assert http.post(f"/api/v1/generations/{gen['id']}/retry", headers=key_headers(b_key)).status_code == 404
    reader, _ = runtime.keys.create(
        runtime.default_project_id, "r", ["generations:read"], rate_limit_per_hour=0
    )
    assert http.post(f"/api/v1/generations/{gen['id']}/retry", headers=key_headers(reader)).status_code == 403


def test_retry_checks_the_budget_again(http: httpx.Client, runtime: Any) -> None:
    gen = create(http)  # 2 credits
    http.post(f"/api/v1/generations/{gen['id']}/cancel")
    create(http)  # 2 more, reserved while queued
    runtime.keys.set_project_limits(runtime.default_project_id, budget_credits=3, rate_limit_per_hour=None)
    r = http.post(f"/api/v1/generations/{gen['id']}/retry")
    assert r.status_code == 402, r.text
    assert http.get(f"/api/v1/generations/{gen['id']}").json()["data"]["status"] == "canceled"
