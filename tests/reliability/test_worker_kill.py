"""A worker killed with SIGKILL mid-job: the job completes once, on another worker, after lease expiry."""

from __future__ import annotations

import pytest

from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from processes import easel_env, start_worker
from support import wait_for

pytestmark = pytest.mark.slow


def test_killed_worker_job_completes_once_elsewhere(runtime, settings, tmp_path) -> None:
    pid = runtime.default_project_id
    gen = runtime.generations.submit(
        runtime.principal(pid), GenerationSpec(prompt="a red circle", size="128x128", n=2, steps=80)
    )

    def current():  # type: ignore[no-untyped-def]
        return runtime.repo.get_generation(pid, gen.id)

    env = easel_env(settings, lease_seconds="2", idle_check_seconds="0.5")
    first = start_worker(env, tmp_path / "w1.log")
    try:
        wait_for(lambda: current().progress_step >= 1, 120, "the first worker to start the job")
    finally:
        first.kill()
    killed = current()
    assert killed.status is Status.RUNNING and killed.attempts == 1

    second = start_worker(env, tmp_path / "w2.log")
    try:
        wait_for(lambda: current().status.finished, 180, "the second worker to finish the job")
    finally:
        assert second.stop(60) == 0, second.tail(2000)
    final = current()
    assert final.status is Status.SUCCEEDED, final.error_message
    assert final.attempts == 2
    assert sorted(i.index for i in final.images) == [0, 1]
    stored = runtime.blobs.keys(f"{pid}/{gen.id}/")
    assert stored == sorted(i.storage_key for i in final.images)  # exactly one set of images
