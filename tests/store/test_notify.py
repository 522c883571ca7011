from __future__ import annotations

import threading
import time
from pathlib import Path

from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from easel.store.notify import Doorbell


def test_ring_wakes_every_listener_and_prunes_dead_ones(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "run")
    a, b = bell.listener(), bell.listener()
    dead = bell.listener()
    dead.sock.close()  # a crashed worker leaves its socket file behind
    assert bell.ring() == 2
    assert a.wait(0) and b.wait(0)
    assert not a.wait(0)  # rings were drained
    assert not dead.path.exists()
    a.close()
    b.close()
    assert bell.ring() == 0


def test_long_data_dirs_fall_back_to_a_short_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / "run"
    bell = Doorbell(deep)
    listener = bell.listener()
    assert bell.ring() == 1 and listener.wait(0)
    listener.close()


def test_idle_worker_is_woken_by_a_new_job_not_by_a_timer(runtime) -> None:
    # The idle timer is set far beyond the test's patience: only the doorbell can start the job in time.
    runtime.settings.idle_check_seconds = 600
    worker = runtime.make_worker()
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        gen = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", size="64x64"))
        done = threading.Event()

        def check() -> None:
            while not done.is_set():
                g = runtime.repo.get_generation(runtime.default_project_id, gen.id)
                if g.status is Status.SUCCEEDED:
                    done.set()
                done.wait(0.02)

        checker = threading.Thread(target=check, daemon=True)
        checker.start()
        assert done.wait(60), "the idle worker was not woken"
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_postgres_notify_wakes_a_worker_elsewhere(runtime) -> None:
    """A job created without ringing this machine's doorbell (as from another machine) still wakes an
    idle worker on PostgreSQL, through LISTEN/NOTIFY."""
    if runtime.repo.engine.dialect.name != "postgresql":
        import pytest

        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    runtime.settings.idle_check_seconds = 600
    worker = runtime.make_worker()
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        spec = GenerationSpec(prompt="x", size="64x64").resolve(runtime.catalog, seed=7)
        gen = runtime.repo.create_generation(runtime.default_project_id, spec, max_attempts=3, credits=0)
        done = threading.Event()

        def check() -> None:
            while not done.is_set():
                if runtime.repo.get_generation(runtime.default_project_id, gen.id).status is Status.SUCCEEDED:
                    done.set()
                done.wait(0.02)

        threading.Thread(target=check, daemon=True).start()
        assert done.wait(60), "NOTIFY did not wake the worker"
    finally:
        worker.stop()
        thread.join(30)


def test_a_lost_listen_connection_is_opened_again(runtime, caplog) -> None:
    """The database restarts (here: the LISTEN connection is terminated): the idle worker opens it again
    and is still woken by NOTIFY; its loop never stops."""
    if runtime.repo.engine.dialect.name != "postgresql":
        import pytest

        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    from sqlalchemy import text

    runtime.settings.idle_check_seconds = 600
    worker = runtime.make_worker()
    old = worker._listener.pg
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        with runtime.repo.engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old.conn.info.backend_pid})
        deadline = time.monotonic() + 30
        while worker._listener.pg is old or worker._listener.pg is None:
            assert time.monotonic() < deadline, "the LISTEN connection was not opened again"
            time.sleep(0.02)
        spec = GenerationSpec(prompt="x", size="64x64").resolve(runtime.catalog, seed=7)
        gen = runtime.repo.create_generation(runtime.default_project_id, spec, max_attempts=3, credits=0)
        deadline = time.monotonic() + 60
        while runtime.repo.get_generation(runtime.default_project_id, gen.id).status is not Status.SUCCEEDED:
            assert time.monotonic() < deadline, "NOTIFY did not wake the worker after the reconnect"
            time.sleep(0.02)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
    assert "the LISTEN connection was lost" in caplog.text
