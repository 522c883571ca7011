"""`easel worker` receiving SIGTERM mid-job: it gives the job back (attempt not counted) and exits 0;
another worker then runs it to completion."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from easel.store.tables import workers
from processes import easel_env, start_worker
from support import wait_for

pytestmark = pytest.mark.slow


def test_sigterm_releases_the_job_without_counting_the_attempt(runtime, settings, tmp_path) -> None:
    pid = runtime.default_project_id
    gen = runtime.generations.submit(
        runtime.principal(pid), GenerationSpec(prompt="a red circle", size="64x64", steps=200)
    )

    def current():  # type: ignore[no-untyped-def]
        return runtime.repo.get_generation(pid, gen.id)

    def registered() -> list[str]:
        with runtime.repo.engine.connect() as conn:
            return list(conn.execute(select(workers.c.id)).scalars())

    log = tmp_path / "w1.log"
    proc = start_worker(easel_env(settings, lease_seconds="5", idle_check_seconds="0.5"), log)
    try:
        wait_for(lambda: current().progress_step >= 2, 120, "the worker to start the job")
        assert len(registered()) == 1  # it reports its heartbeat while it runs
        started = time.monotonic()
        rc = proc.stop(30)
    finally:
        proc.kill()
    assert rc == 0, log.read_text()[-2000:]
    assert time.monotonic() - started < 15  # it stopped at the next step, not after 200
    released = current()
    assert released.status is Status.QUEUED, log.read_text()[-2000:]
    assert released.attempts == 0
    assert released.images == [] and released.started_at is None
    assert released.progress_step == 0
    assert runtime.blobs.keys(f"{pid}/{gen.id}/") == []
    assert registered() == []  # a graceful stop removes the worker's heartbeat row
    assert "finishing the current batch, then stopping" in log.read_text()

    # Another worker picks it up at once (no lease to wait for) and completes it.
    worker = runtime.make_worker()
    assert worker.run_once()
    final = current()
    assert final.status is Status.SUCCEEDED, final.error_message
    assert final.attempts == 1
    assert [i.index for i in final.images] == [0]
    assert runtime.blobs.keys(f"{pid}/{gen.id}/") == [final.images[0].storage_key]
