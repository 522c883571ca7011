"""The server admin's models: GET /api/v1/admin/models (load state per live worker, recent and lost
requests), POST .../{name}/load and /unload performed by a real worker between batches, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from easel.store.tables import utcnow, workers
from support import key_headers, wait_for

NO_KEY = {"Authorization": "", "X-API-Key": "", "X-Client-Authorization": ""}
TINY_FAMILY = ("tiny", "tiny-square", "seedream3.0", "flux-schnell")  # entries sharing the tiny model


@pytest.fixture
def settings(settings: Any) -> Any:
    """The conftest's settings with a long idle check: an idle worker wakes early only when rung, so a
    request done within seconds was picked up through the doorbell (or NOTIFY), not by its timer."""
    return settings.model_copy(update={"idle_check_seconds": 30.0})


def overview(c: Any) -> dict[str, Any]:
    r = c.get("/api/v1/admin/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def model(data: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [m for m in data["models"] if m["name"] == name]
    return found


def request_of(data: dict[str, Any], request_id: str) -> dict[str, Any] | None:
    return next((r for r in data["requests"] if r["id"] == request_id), None)


def until_finished(c: Any, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the list until the request has ended; the overview of that moment."""
    deadline = time.monotonic() + timeout
    while True:
        data = overview(c)
        found = request_of(data, request_id)
        assert found is not None, data["requests"]
        if found["status"] not in ("queued", "running"):
            return data
        assert time.monotonic() < deadline, f"request {request_id} still {found['status']}"
        time.sleep(0.05)


def registered(c: Any) -> str:
    """Wait until the in-process worker has its row and has reported what it holds; its id."""
    wait_for(
        lambda: [w["loaded"] is not None for w in overview(c)["workers"]] == [True], 30, "the worker's row"
    )
    worker_id: str = overview(c)["workers"][0]["id"]
    return worker_id


def generate(c: Any) -> dict[str, Any]:
    r = c.post(
        "/api/v1/generations",
        json={"prompt": "a red circle", "model": "tiny", "size": "64x64", "steps": 1},
        headers={"Prefer": "wait=60"},
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def age(runtime: Any, worker_id: str) -> None:
    """The worker's last heartbeat is long past: it died."""
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(last_seen_at=utcnow() - timedelta(minutes=10))
        )


def test_load_generate_unload_on_a_live_worker(client: Any, runtime: Any) -> None:
    worker_id = registered(client)
    worker = client.app.state.worker
    assert worker.id == worker_id
    data = overview(client)
    assert data["requests"] == [] and data["lost"] == []
    tiny = model(data, "tiny")
    assert tiny["source"] == str(runtime.catalog.resolve("tiny").source)
    assert tiny["backend"] == "diffusers" and "text-to-image" in tiny["tasks"]
    assert tiny["aliases"] == ["dall-e-2", "tiny-alias"]
    assert [m["name"] for m in data["models"]] == list(runtime.catalog.models)
    for m in data["models"]:
        assert m["workers"] == [{"workerId": worker_id, "loaded": False, "since": None, "memoryBytes": None}]
    assert data["workers"][0]["loaded"] == []

    # Load, by an alias: one request, for the one live worker, under the canonical name.
    started = time.monotonic()
    r = client.post("/api/v1/admin/models/tiny-alias/load")
    assert r.status_code == 202, r.text
    [req] = r.json()["data"]
    assert req["model"] == "tiny" and req["action"] == "load" and req["workerId"] == worker_id
    assert req["status"] == "queued" and req["error"] is None and req["finishedAt"] is None
    data = until_finished(client, req["id"])
    assert time.monotonic() - started < 20  # rung awake: its idle timer is 30 s
    done = request_of(data, req["id"])
    assert done is not None and done["status"] == "done" and done["error"] is None
    assert done["finishedAt"] is not None
    # The answer that says done already shows the model loaded (the state is written first), and so
    # is every entry that shares its pipeline.
    for name in TINY_FAMILY:
        [state] = model(data, name)["workers"]
        assert state["workerId"] == worker_id and state["loaded"] is True
        assert state["since"] is not None and state["memoryBytes"] > 0
    [held] = data["workers"][0]["loaded"]
    assert held["source"] == tiny["source"] and set(TINY_FAMILY) <= set(held["models"])
    backend = worker.backend(runtime.catalog.resolve("tiny"))
    [pipe] = backend._pipes.values()

    # A generation after it runs on the pipeline the request loaded (nothing loaded again).
    gen = generate(client)
    assert gen["status"] == "success", gen
    assert list(backend._pipes.values()) == [pipe]
    assert (
        model(overview(client), "tiny")["workers"][0]["since"] == model(data, "tiny")["workers"][0]["since"]
    )

    # Unload: done, shown unloaded everywhere, the pipeline gone from the worker's cache.
    r = client.post("/api/v1/admin/models/tiny/unload")
    assert r.status_code == 202, r.text
    [req2] = r.json()["data"]
    assert req2["action"] == "unload" and req2["workerId"] == worker_id
    data = until_finished(client, req2["id"])
    assert request_of(data, req2["id"])["status"] == "done"  # type: ignore[index]
    for name in TINY_FAMILY:
        assert model(data, name)["workers"][0]["loaded"] is False
    assert data["workers"][0]["loaded"] == []
    assert backend._pipes == {}
    assert [r["id"] for r in data["requests"]] == [req2["id"], req["id"]]  # newest first

    # A batch that loads the model lazily is reported too.
    assert generate(client)["status"] == "success"
    wait_for(
        lambda: model(overview(client), "tiny")["workers"][0]["loaded"] is True, 30, "the lazy load reported"
    )


def test_an_unknown_model_is_a_404_in_the_native_shape(api: Any) -> None:
    for action in ("load", "unload"):
        r = api.post(f"/api/v1/admin/models/no-such-model/{action}")
        assert r.status_code == 404
        assert r.json() == {
            "success": False,
            "error": {"code": "MODEL_NOT_FOUND", "message": "model no-such-model not found", "fields": []},
        }


def test_no_live_worker_is_a_409(api: Any, runtime: Any) -> None:
    r = api.post("/api/v1/admin/models/tiny/load")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "NO_WORKER" and "no worker is running" in error["message"]
    # A worker whose heartbeat is old does not count either.
    dead = runtime.make_worker()
    dead.report_alive(every=0)
    age(runtime, dead.id)
    r = api.post("/api/v1/admin/models/tiny/unload")
    assert r.status_code == 409 and r.json()["error"]["code"] == "NO_WORKER"
    data = overview(api)
    assert data["workers"] == [] and data["requests"] == []
    assert all(m["workers"] == [] for m in data["models"])


def test_only_the_server_admin_may(api: Any, runtime: Any) -> None:
    other = runtime.repo.ensure_project("tenant-b")
    tenant_admin, _ = runtime.keys.create(other, "tenant admin", ["admin"], rate_limit_per_hour=0)
    local_reader, _ = runtime.keys.create(runtime.default_project_id, "reader", ["generations:read"])
    live = runtime.make_worker()
    live.report_alive(every=0)  # a live worker: a request would be accepted from the server admin
    for key, status, code in (
        (tenant_admin, 403, "FORBIDDEN"),
        (local_reader, 403, "FORBIDDEN"),
        (None, 401, "UNAUTHORIZED"),
    ):
        headers = key_headers(key) if key else NO_KEY
        for method, path in (
            ("GET", "/api/v1/admin/models"),
            ("POST", "/api/v1/admin/models/tiny/load"),
            ("POST", "/api/v1/admin/models/tiny/unload"),
        ):
            r = api.request(method, path, headers=headers)
            assert r.status_code == status, (key, path, r.text)
            body = r.json()
            assert body["success"] is False and body["error"]["code"] == code
    assert overview(api)["requests"] == []  # nothing was asked of the worker


def test_a_request_whose_worker_died_is_lost(api: Any, runtime: Any) -> None:
    worker = runtime.make_worker()
    worker.report_alive(every=0)
    r = api.post("/api/v1/admin/models/tiny/load")
    assert r.status_code == 202, r.text
    [req] = r.json()["data"]
    assert overview(api)["lost"] == []

    age(runtime, worker.id)  # it died before doing it
    data = overview(api)
    lost = request_of(data, req["id"])
    assert lost is not None and lost["status"] == "lost" and lost["finishedAt"] is not None
    assert lost["error"] == f"worker {worker.id} died (no heartbeat) before doing this request"
    assert [r["id"] for r in data["lost"]] == [req["id"]]
    assert data["workers"] == []

    # Should it come back, it does not do a request already reported lost.
    worker.report_alive(every=0)
    assert worker.run_model_requests() == 0
    assert request_of(overview(api), req["id"])["status"] == "lost"  # type: ignore[index]
    assert worker._backends == {}  # nothing was loaded

    # A worker stopping gracefully gives up what it has not done: lost, saying so.
    r = api.post("/api/v1/admin/models/tiny/load")
    [req2] = r.json()["data"]
    assert req2["workerId"] == worker.id
    worker.stop()
    worker.run_forever()  # returns at once (stopped): abandons its requests, removes its row
    stopped = request_of(overview(api), req2["id"])
    assert stopped is not None and stopped["status"] == "lost"
    assert stopped["error"] == f"worker {worker.id} stopped before doing this request"


def test_requests_go_only_to_workers_serving_the_model(api: Any, runtime: Any) -> None:
    from easel.engine.worker import Worker

    rt = runtime
    square_only = Worker(
        rt.settings.model_copy(update={"worker_models": ["tiny-square"]}),
        rt.catalog,
        rt.repo,
        rt.queue,
        rt.blobs,
        rt.doorbell,
    )
    square_only.report_alive(every=0)
    r = api.post("/api/v1/admin/models/tiny/load")
    assert r.status_code == 409
    assert "no live worker serves 'tiny'" in r.json()["error"]["message"]
    r = api.post("/api/v1/admin/models/tiny-square/load")
    assert r.status_code == 202
    assert [q["workerId"] for q in r.json()["data"]] == [square_only.id]
    data = overview(api)
    assert model(data, "tiny")["workers"] == []
    assert [w["workerId"] for w in model(data, "tiny-square")["workers"]] == [square_only.id]


def test_a_load_that_fails_says_why(api: Any, runtime: Any, tmp_path: Any) -> None:
    from easel.settings import load_catalog
    from support import write_catalog

    worker = runtime.make_worker()
    # This worker's catalog points the model at a folder that does not exist.
    path = write_catalog(tmp_path / "missing.toml", tmp_path / "no-such-folder")
    worker.catalog = load_catalog(path)
    worker.report_alive(every=0)
    worker.report_loaded()
    [req] = api.post("/api/v1/admin/models/tiny/load").json()["data"]
    assert worker.run_model_requests() == 1
    data = overview(api)
    failed = request_of(data, req["id"])
    assert failed is not None and failed["status"] == "failed" and failed["finishedAt"] is not None
    assert "does not exist" in failed["error"]
    assert model(data, "tiny")["workers"][0]["loaded"] is False


def test_the_loaded_state_is_written_before_the_request_is_done(api: Any, runtime: Any) -> None:
    worker = runtime.make_worker()
    worker.report_alive(every=0)
    [req] = api.post("/api/v1/admin/models/tiny/load").json()["data"]
    seen_at_finish: list[Any] = []
    finish = worker.requests.finish

    def spying(request_id: str, error: str | None = None) -> bool:
        [row] = worker.registry.recent(timedelta(minutes=1))
        seen_at_finish.append(row.loaded)
        return finish(request_id, error)

    worker.requests.finish = spying
    assert worker.run_model_requests() == 1
    [loaded] = seen_at_finish
    assert loaded is not None and len(loaded) == 1 and "tiny" in loaded[0].models
    assert request_of(overview(api), req["id"])["status"] == "done"  # type: ignore[index]


class SlowLoader:
    """A backend whose load takes a while (and records the worker's heartbeat during it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.models: set[str] = set()

    def generate(self, request: Any, on_step: Any) -> Any:
        raise AssertionError("no batch in this test")

    def load(self, model: Any) -> None:
        time.sleep(self.seconds)
        self.models.add(model.source)

    def unload(self, model: Any) -> bool:
        return self.models.discard(model.source) is None

    def loaded(self) -> list[Any]:
        from easel.engine.backends.base import Loaded

        return [Loaded(s, utcnow()) for s in sorted(self.models)]


def test_the_heartbeat_goes_on_while_a_model_loads(api: Any, runtime: Any) -> None:
    from easel.engine.worker import Worker

    rt = runtime
    settings = rt.settings.model_copy(update={"heartbeat_seconds": 0.2, "idle_check_seconds": 0.5})
    backend = SlowLoader(1.5)
    worker = Worker(settings, rt.catalog, rt.repo, rt.queue, rt.blobs, rt.doorbell, backend=backend)  # type: ignore[arg-type]
    worker.report_alive(every=0)
    [before] = worker.registry.recent(timedelta(minutes=1))
    [req] = api.post("/api/v1/admin/models/tiny/load").json()["data"]
    runner = threading.Thread(target=worker.run_model_requests)
    runner.start()
    wait_for(lambda: request_of(overview(api), req["id"])["status"] == "running", 10, "the load to start")  # type: ignore[index]
    time.sleep(1.0)
    [during] = worker.registry.recent(timedelta(minutes=1))
    still = request_of(overview(api), req["id"])
    runner.join(30)
    assert still is not None and still["status"] == "running"  # the load had not ended yet
    assert during.last_seen_at > before.last_seen_at  # its heartbeat went on meanwhile
    data = overview(api)
    assert request_of(data, req["id"])["status"] == "done"  # type: ignore[index]
    assert model(data, "tiny")["workers"][0]["loaded"] is True
    assert model(data, "tiny")["workers"][0]["memoryBytes"] is None  # this backend does not know
