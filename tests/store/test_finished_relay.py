"""Jobs that end in another process (or on another host) wake this process's waiters at once: the
FINISHED doorbell and, on PostgreSQL, NOTIFY easel_finished, relayed onto the EventHub (easel/runtime.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from easel.domain.spec import GenerationSpec
from easel.runtime import Runtime, relayed_events
from easel.service.events import JobEvent
from easel.store.notify import FINISHED, MAX_MESSAGE, Doorbell


async def _finished_event(rt: Runtime, gid: str, run_elsewhere: Any) -> JobEvent:
    """Subscribe to `gid` on `rt`'s hub, run the other process's work in a thread, and return the first
    event the hub delivers (the other process publishes nothing on this hub: only the relay can)."""
    with rt.events.subscribe(gid) as queue:
        thread = threading.Thread(target=run_elsewhere, daemon=True)
        thread.start()
        event = await asyncio.wait_for(queue.get(), 60)
        await asyncio.to_thread(thread.join, 60)
    return event


def test_the_finished_doorbell_carries_messages_to_other_processes(tmp_path: Any) -> None:
    bell = Doorbell(tmp_path / "run")
    listener = bell.listener(FINISHED)
    jobs = bell.listener()  # a worker's: a finished ring is not a new job
    try:
        assert bell.ring(FINISHED, b"Fa1,b2") == 1
        assert bell.ring(FINISHED, b"Fc3") == 1
        assert listener.receive(5) == [b"Fa1,b2", b"Fc3"]
        assert listener.receive(0) == []
        assert not jobs.wait(0)
        # A worker skips the listener of the EventHub it publishes to directly (tagged with the hub's tag).
        hub = bell.listener(FINISHED, tag="hub1")
        assert bell.others(FINISHED) == 2 and bell.others(FINISHED, "hub1") == 1
        assert bell.ring(FINISHED, b"Fd4", skip="hub1") == 1
        assert listener.receive(5) == [b"Fd4"] and hub.receive(0) == []
        hub.close()
        assert bell.ring(FINISHED, b"F" + b"x" * (MAX_MESSAGE + 1)) == 0  # too large: sent to nobody
    finally:
        listener.close()
        jobs.close()


def test_relayed_messages_become_hub_events() -> None:
    assert relayed_events(b"Fa1,b2") == [JobEvent("a1", "finished"), JobEvent("b2", "finished")]
    header = b'{"id":"g1","step":5,"total":20,"index":0,"count":3,"image_index":0,"width":8,"height":8}'
    [event] = relayed_events(b"P" + header + b"\n\xff\xd8jpeg")
    assert event.generation_id == "g1" and event.kind == "preview"
    assert event.data["step"] == 5 and event.data["jpeg"] == b"\xff\xd8jpeg"
    assert relayed_events(b"?junk") == []


def test_a_job_ended_by_a_worker_in_another_process_wakes_this_process(runtime: Runtime) -> None:
    """The API process (this runtime, no worker of its own) and a worker process (another runtime on the
    same database and data folder: its own EventHub, as in `easel worker`)."""
    other = Runtime.build(runtime.settings, migrate_db=False)
    relay = runtime.make_finished_relay()
    relay.start()
    try:
        gen = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", size="64x64"))
        worker = other.make_worker()
        event = asyncio.run(_finished_event(runtime, gen.id, worker.run_once))
        assert event == JobEvent(gen.id, "finished")
        assert runtime.generations.get(runtime.default_project_id, gen.id).status.value == "succeeded"
    finally:
        relay.stop()
        other.close()


def test_postgres_notifies_the_end_of_a_job_to_other_hosts(runtime: Runtime, tmp_path: Any) -> None:
    """A worker on another host (its own data folder, so no doorbell of this one rings) ends the job, and
    a cancel from another API host ends another: NOTIFY easel_finished reaches this process."""
    if runtime.repo.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    elsewhere = runtime.settings.model_copy(update={"data_dir": tmp_path / "other-host"})
    other = Runtime.build(elsewhere, migrate_db=False)
    relay = runtime.make_finished_relay()
    relay.start()
    try:
        first = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", size="64x64"))
        event = asyncio.run(_finished_event(runtime, first.id, other.make_worker().run_once))
        assert event == JobEvent(first.id, "finished")

        second = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="y", size="64x64"))

        def cancel() -> None:
            other.generations.cancel(other.default_project_id, second.id)

        event = asyncio.run(_finished_event(runtime, second.id, cancel))
        assert event == JobEvent(second.id, "finished")
    finally:
        relay.stop()
        other.close()
