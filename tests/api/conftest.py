"""A real HTTP server (uvicorn in a thread) for tests that drive a dialect with a vendor's own SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import serve


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
