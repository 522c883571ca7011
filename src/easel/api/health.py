"""Readiness, the one answer of `GET /healthz` and `GET /api/v1/healthz`.

200 `{"status": "ok", ...}` when the database answers and, if this process runs an in-process worker,
that worker's thread is alive; 503 `{"status": "unavailable", ...}` otherwise, so a load balancer or an
orchestrator stops sending work to (or restarts) a server whose worker died. `worker` is `running`,
`dead` or `none` (an API-only process); `workers` is a hint: how many workers, fleet-wide, sent a
heartbeat recently (max(lease, 3 x idle check)), absent when the database does not answer."""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

from easel.service.container import Services

log = logging.getLogger(__name__)


def worker_state(state: Any) -> str:
    """`running`, `dead` or `none`: the in-process worker's thread (app.state.worker_thread)."""
    thread: threading.Thread | None = getattr(state, "worker_thread", None)
    if thread is None:
        return "none"
    return "running" if thread.is_alive() else "dead"


def _check(svc: Services) -> dict[str, Any]:
    body: dict[str, Any] = dict(svc.generations.health())
    if body.get("status") == "ok":
        try:
            body["workers"] = len(svc.metrics.workers(svc.settings.worker_live_within))
        except Exception:  # the hint only; the database check above decides
            log.warning("health check: could not count live workers", exc_info=True)
    return body


async def readiness(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    body = await anyio.to_thread.run_sync(_check, svc)
    body["worker"] = worker_state(request.app.state)
    ok = body.get("status") == "ok" and body["worker"] != "dead"
    body["status"] = "ok" if ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)
