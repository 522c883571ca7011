"""The ASGI application: every dialect's router on one FastAPI app, built from Settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from easel import __version__
from easel.api.health import readiness
from easel.api.metrics import router as metrics_router
from easel.api.native.admin import router as admin_router
from easel.api.native.events import router as events_router
from easel.api.native.library import router as library_router
from easel.api.native.router import router as native_router
from easel.api.native.webhooks import router as webhooks_router
from easel.api.openai.router import router as openai_router
from easel.api.openapi import install as install_openapi
from easel.api.pictory.router import router as pictory_router
from easel.api.placewise.router import router as placewise_router
from easel.api.routing import method_not_allowed
from easel.api.wix.router import router as wix_router
from easel.console import install as install_console
from easel.runtime import Runtime
from easel.settings import Settings

log = logging.getLogger(__name__)

# CORS (EASEL_CORS_ORIGINS): the request headers Easel's dialects read, and the response headers a
# browser page may read (rate limits, Retry-After, idempotent replays, Prefer: wait).
CORS_ALLOW_HEADERS = [
    "Authorization",
    "X-API-Key",
    "X-Client-Authorization",
    "X-Loyalty-Club-Slug",
    "Idempotency-Key",
    "Prefer",
    "Content-Type",
    "X-Easel-Priority",
    "Cancel-After",
]
CORS_EXPOSE_HEADERS = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "Idempotent-Replayed",
    "Preference-Applied",
]


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, with_worker: bool | None = None
) -> FastAPI:
    """Build the app. Nothing is connected until the lifespan starts (no work at import time)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime.build(settings or Settings())
        app.state.runtime = rt
        app.state.services = rt.services
        run_worker = rt.settings.worker_enabled if with_worker is None else with_worker
        worker = None
        thread = None
        if run_worker:
            worker = rt.make_worker()
            rt.services.metrics.local_worker = worker.times  # GET /metrics: this process's worker
            thread = threading.Thread(target=worker.run_forever, name="easel-worker", daemon=True)
            thread.start()
        app.state.worker = worker
        app.state.worker_thread = thread  # readiness: /healthz is a 503 once this thread has died
        gateway = None
        if (
            rt.catalog.has_remote_work and rt.settings.upstream_in_serve
        ):  # the gateway worker (docs/gateway.md)
            gateway = rt.make_upstream_worker()
            gateway.start()
        app.state.upstream_worker = gateway
        dispatcher = rt.make_webhook_dispatcher() if rt.settings.webhooks_enabled else None
        if dispatcher is not None:
            dispatcher.start()
        app.state.webhook_dispatcher = dispatcher
        relay = rt.make_finished_relay()  # jobs that workers in other processes end wake our waiters
        relay.start()
        try:
            yield
        finally:
            relay.stop()
            if gateway is not None:
                gateway.stop()
            if dispatcher is not None:
                dispatcher.stop()
            if worker is not None and thread is not None:
                worker.stop()
                thread.join(timeout=60)
            if runtime is None:
                rt.close()

    # Read now (not at import): the middleware and the docs routes are fixed when the app is built.
    settings = settings or (runtime.settings if runtime is not None else Settings())
    docs = settings.docs_enabled  # EASEL_DOCS_ENABLED: /docs, /redoc and /openapi.json
    app = FastAPI(
        title="Easel",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    if settings.cors_origins:  # EASEL_CORS_ORIGINS; none: no CORS headers (same-origin pages only)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
    app.include_router(native_router)
    app.include_router(admin_router)
    app.include_router(webhooks_router)
    app.include_router(events_router)
    app.include_router(library_router)
    app.include_router(openai_router)
    app.include_router(wix_router)
    app.include_router(placewise_router)
    app.include_router(pictory_router)
    app.include_router(metrics_router)  # GET /metrics; 404 unless EASEL_METRICS_ENABLED
    install_openapi(app)  # the real status codes and error shapes (api/openapi.py)
    install_console(app, settings)  # the web console at / and /console/ (EASEL_CONSOLE_ENABLED)
    app.add_exception_handler(405, method_not_allowed(app))  # Allow: every method of the path

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        return await readiness(request)

    return app
