"""A real HTTP server (uvicorn in a thread) for tests that drive a dialect with a vendor's own SDK."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def serve(app: Any, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", http="h11")
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread; this one is not.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture
def live_server(runtime) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The base URL of the app (with an in-process worker) served over real HTTP."""
    from easel.app import create_app

    with serve(create_app(runtime=runtime, with_worker=True)) as url:
        yield url


@pytest.fixture
def live_server_no_worker(runtime) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The same without a worker: jobs stay queued."""
    from easel.app import create_app

    with serve(create_app(runtime=runtime, with_worker=False)) as url:
        yield url
