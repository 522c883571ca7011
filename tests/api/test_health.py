"""Readiness: /healthz and /api/v1/healthz answer 503 once the in-process worker is dead or the database
does not answer, and say which worker this process runs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from support import wait_for

ROUTES = ("/healthz", "/api/v1/healthz")


def test_a_server_with_a_running_worker_is_ready(client: Any, runtime: Any) -> None:
    assert client.app.state.worker_thread.is_alive()
    wait_for(lambda: client.get("/healthz").json().get("workers") == 1, 30, "the worker's heartbeat row")
    for route in ROUTES:
        r = client.get(route)
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "database": runtime.repo.engine.dialect.name,
            "worker": "running",
            "workers": 1,
        }


def test_a_dead_in_process_worker_makes_the_server_unavailable(client: Any, runtime: Any) -> None:
    worker, thread = client.app.state.worker, client.app.state.worker_thread
    worker.stop()  # its run_forever returns: the thread ends as if it had died
    thread.join(30)
    assert not thread.is_alive()
    for route in ROUTES:
        r = client.get(route)
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable" and body["worker"] == "dead"
        assert body["database"] == runtime.repo.engine.dialect.name


def test_an_api_only_server_has_no_worker_and_is_ready(api: Any) -> None:
    for route in ROUTES:
        r = api.get(route)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and body["worker"] == "none" and body["workers"] == 0


def test_a_database_that_does_not_answer_is_a_503(
    api: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def down() -> str:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(runtime.repo, "ping", down)
    for route in ROUTES:
        r = api.get(route)
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "database": "unreachable", "worker": "none"}
    assert "connection refused" in caplog.text
