"""A worker killed with SIGKILL mid-job: the job completes once, on another worker, after lease expiry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from support import storage_env

pytestmark = pytest.mark.slow


def spawn_worker(settings, log_path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = (
        os.environ
        | {
            "EASEL_DATA_DIR": str(settings.data_dir),
            "EASEL_DATABASE_URL": settings.resolved_database_url,
            "EASEL_CATALOG": str(settings.catalog),
            "EASEL_SECRET_KEY": "test-secret",
            "EASEL_LEASE_SECONDS": "2",
            "EASEL_IDLE_CHECK_SECONDS": "0.5",
            "OMP_NUM_THREADS": "1",
        }
        | storage_env(settings)
    )
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "easel", "worker"], env=env, stdout=log, stderr=log)


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_killed_worker_job_completes_once_elsewhere(runtime, settings, tmp_path) -> None:
    pid = runtime.default_project_id
    gen = runtime.generations.create(
        pid, GenerationSpec(prompt="a red circle", size="128x128", n=2, steps=80)
    )

    def current():  # type: ignore[no-untyped-def]
        return runtime.repo.get_generation(pid, gen.id)

    first = spawn_worker(settings, tmp_path / "w1.log")
    try:
        wait_for(lambda: current().progress_step >= 1, 120, "the first worker to start the job")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed = current()
    assert killed.status is Status.RUNNING and killed.attempts == 1

    second = spawn_worker(settings, tmp_path / "w2.log")
    try:
        wait_for(lambda: current().status.finished, 180, "the second worker to finish the job")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, (tmp_path / "w2.log").read_text()[-2000:]
    final = current()
    assert final.status is Status.SUCCEEDED, final.error_message
    assert final.attempts == 2
    assert sorted(i.index for i in final.images) == [0, 1]
    stored = runtime.blobs.keys(f"{pid}/{gen.id}/")
    assert stored == sorted(i.storage_key for i in final.images)  # exactly one set of images
