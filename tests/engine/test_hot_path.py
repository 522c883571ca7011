"""The worker's hot path: progress written a few times per batch, cancels seen within one step through the
lease keeper (no database write per step), batch k+1 denoising while batch k is stored, leases of jobs in
post-processing kept, a graceful stop that drains post-processing, storage faults failing only their job.

A `Sleepy` backend stands in for an accelerator: a fixed wall time per step (time.sleep), flat images of
the requested size, and a record of when each pipeline call started and ended."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import event

import easel.engine.worker as worker_module
from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from easel.engine.backends.base import BatchRequest, Interrupted, StepCallback
from support import wait_for


class Sleepy:
    """`step_seconds` of sleep per step; `calls`: (start, end, prompts) of every pipeline call."""

    def __init__(self, step_seconds: float) -> None:
        self.step_seconds = step_seconds
        self.calls: list[tuple[float, float, list[str]]] = []
        self.steps: list[tuple[float, int]] = []  # (when, step) of every step callback

    def generate(self, request: BatchRequest, on_step: StepCallback) -> list[Image.Image]:
        start = time.monotonic()
        try:
            for i in range(1, request.steps + 1):
                time.sleep(self.step_seconds)
                self.steps.append((time.monotonic(), i))
                if not on_step(i, request.steps):
                    raise Interrupted()
        finally:
            self.calls.append((start, time.monotonic(), [it.prompt for it in request.items]))
        return [
            Image.new("RGB", (request.width, request.height), (it.seed % 256, 40, 90)) for it in request.items
        ]


class SlowStore:
    """A BlobStore whose puts take `seconds` each (after `before(key)`); `puts`: (key, end time)."""

    def __init__(self, inner: Any, seconds: float, before: Any = None) -> None:
        self.inner, self.seconds, self.before = inner, seconds, before
        self.puts: list[tuple[str, float]] = []

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.before is not None:
            self.before(key)
        time.sleep(self.seconds)
        self.inner.put(key, data, content_type)
        self.puts.append((key, time.monotonic()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make(runtime: Any, prompt: str, **kw: Any) -> Any:
    return runtime.generations.submit(runtime.principal(), GenerationSpec(prompt=prompt, **kw))


def get(runtime: Any, gid: str) -> Any:
    return runtime.repo.get_generation(runtime.default_project_id, gid)


def progress_updates(runtime: Any) -> list[str]:
    """Every statement that writes progress to the generations table, recorded as it is sent."""
    sent: list[str] = []

    @event.listens_for(runtime.queue.engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE GENERATIONS") and "progress_total=" in statement:
            sent.append(statement)

    return sent


def run_in_thread(worker: Any) -> threading.Thread:
    thread = threading.Thread(target=worker.run_forever, name="easel-worker", daemon=True)
    thread.start()
    return thread


def test_progress_reaches_the_database_a_few_times_per_batch(runtime: Any) -> None:
    backend = Sleepy(0.02)  # 20 steps: 0.4 s
    worker = runtime.make_worker(backend=backend)
    published: list[int] = []
    worker.publish = lambda e: published.append(e.data["step"]) if e.kind == "progress" else None
    writes = progress_updates(runtime)
    gen = make(runtime, "a red circle", size="64x64", steps=20)
    assert worker.run_once()
    final = get(runtime, gen.id)
    assert final.status is Status.SUCCEEDED and final.progress_step == 20
    assert published == list(range(1, 21))  # the in-process events still get every step
    # The first step, then at most every 0.25 s (completion records the last): 2 writes here, not 20.
    duration = backend.calls[0][1] - backend.calls[0][0]
    assert 1 <= len(writes) <= 1 + duration / worker_module.PROGRESS_INTERVAL, (len(writes), duration)
    assert worker.stats.progress_writes == len(writes)


def test_the_real_pipeline_writes_progress_a_few_times(runtime: Any) -> None:
    worker = runtime.make_worker()
    writes = progress_updates(runtime)
    gen = make(runtime, "a red circle", size="64x64", steps=20)
    started = time.monotonic()
    assert worker.run_once()
    elapsed = time.monotonic() - started
    assert get(runtime, gen.id).status is Status.SUCCEEDED
    assert len(writes) <= 1 + elapsed / worker_module.PROGRESS_INTERVAL, (len(writes), elapsed)


def cancel_mid_run(runtime: Any, monkeypatch: Any, cancel: Any) -> tuple[Sleepy, Any, int, int]:
    """Run a 100-step job (0.1 s a step) with no progress write after the first step, cancel it with
    `cancel(gid)` once step 3 is done; the backend, the final record, the last step published before
    the cancel returned and the last step published at all."""
    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL", 1e9)  # only the watcher can see the cancel
    backend = Sleepy(0.1)
    worker = runtime.make_worker(backend=backend)
    published: list[int] = []
    worker.publish = lambda e: published.append(e.data["step"]) if e.kind == "progress" else None
    gen = make(runtime, "a red circle", size="64x64", steps=100)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        wait_for(lambda: len(published) >= 3, 60, "the job to reach step 3")
        cancel(gen.id)
        at_cancel = published[-1]
    finally:
        thread.join(60)
    return backend, get(runtime, gen.id), at_cancel, published[-1]


def test_a_cancel_stops_the_batch_within_one_step_without_a_progress_write(
    runtime: Any, monkeypatch: Any
) -> None:
    writes = progress_updates(runtime)
    backend, final, at_cancel, last = cancel_mid_run(
        runtime, monkeypatch, lambda gid: runtime.generations.cancel(runtime.default_project_id, gid)
    )
    assert final.status is Status.CANCELED and final.images == []
    assert last <= at_cancel + 1 < 100  # the step under way when the cancel came was the last
    assert len(backend.steps) <= at_cancel + 2  # the backend was stopped at the next step callback
    assert len(writes) == 1  # step 1 only: the cancel was seen in memory, not by a fenced write
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{final.id}") == []


def test_notify_alone_wakes_the_cancel_watcher_on_postgresql(runtime: Any, monkeypatch: Any) -> None:
    if runtime.queue.engine.dialect.name != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's (on SQLite the cancel's doorbell or the next heartbeat does it)")
    # The repository's cancel, without the service's doorbell: as from an API process on another host.
    _, final, at_cancel, last = cancel_mid_run(
        runtime, monkeypatch, lambda gid: runtime.repo.cancel(runtime.default_project_id, gid)
    )
    assert final.status is Status.CANCELED and final.images == []
    assert last <= at_cancel + 1 < 100


def test_without_a_ring_the_next_heartbeat_sees_the_cancel(runtime: Any, monkeypatch: Any) -> None:
    # No doorbell, no NOTIFY: only the heartbeat (every lease / 3 = 1.7 s here) finds the job canceled.
    monkeypatch.setattr("easel.store.repository.notify_cancel", lambda conn: None)
    backend, final, at_cancel, last = cancel_mid_run(
        runtime, monkeypatch, lambda gid: runtime.repo.cancel(runtime.default_project_id, gid)
    )
    assert final.status is Status.CANCELED and final.images == []
    beats = runtime.settings.heartbeat_interval / backend.step_seconds
    assert last <= at_cancel + beats + 2 < 100


def test_the_next_batch_denoises_while_the_previous_one_is_stored(runtime: Any, monkeypatch: Any) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_batch_images": 1})
    backend = Sleepy(0.03)  # 4 steps: 0.12 s a batch
    worker = runtime.make_worker(backend=backend)
    worker.blobs = SlowStore(runtime.blobs, 0.4)  # storing takes longer than denoising
    committed: dict[str, float] = {}
    real = runtime.queue.complete

    def complete(job: Any, *args: Any, **kwargs: Any) -> bool:
        done = real(job, *args, **kwargs)
        committed[job.spec.prompt] = time.monotonic()
        return bool(done)

    monkeypatch.setattr(runtime.queue, "complete", complete)
    jobs = [make(runtime, f"job {i}", size="64x64", steps=4) for i in range(3)]
    thread = run_in_thread(worker)
    try:
        wait_for(
            lambda: all(get(runtime, j.id).status is Status.SUCCEEDED for j in jobs), 60, "the three jobs"
        )
    finally:
        worker.stop()
        thread.join(30)
    assert [prompts for _, _, prompts in backend.calls] == [["job 0"], ["job 1"], ["job 2"]]
    for k in (0, 1):  # batch k+1's pipeline call started before batch k's completion was committed
        assert backend.calls[k + 1][0] < committed[f"job {k}"], (backend.calls, committed)
    assert committed["job 0"] < committed["job 1"] < committed["job 2"]  # completed in claim order
    t = worker.times()
    assert t.images == 3 and t.batches == 3
    assert t.cpu_seconds["encode"] > 0 and t.cpu_seconds["db"] > 0
    assert t.busy_seconds["post"] >= 3 * 0.4


def test_leases_of_jobs_in_post_processing_are_extended(runtime: Any) -> None:
    runtime.settings = runtime.settings.model_copy(update={"lease_seconds": 1.0})  # heartbeat 0.33 s
    runtime.queue.lease = timedelta(seconds=1.0)
    storing = threading.Event()
    worker = runtime.make_worker(backend=Sleepy(0.01))
    worker.blobs = SlowStore(runtime.blobs, 2.5, before=lambda key: storing.set())
    gen = make(runtime, "a red circle", size="64x64", steps=2)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        assert storing.wait(30)
        time.sleep(1.5)  # past the lease the claim gave it: only heartbeats keep it
        assert runtime.queue.claim_batch("w-other", models=None, max_images=8) == []
    finally:
        thread.join(30)
    final = get(runtime, gen.id)
    assert final.status is Status.SUCCEEDED and final.attempts == 1 and len(final.images) == 1


def test_a_graceful_stop_drains_post_processing_and_gives_back_the_running_batch(runtime: Any) -> None:
    storing = threading.Event()
    backend = Sleepy(0.05)
    worker = runtime.make_worker(backend=backend)
    worker.blobs = SlowStore(runtime.blobs, 1.0, before=lambda key: storing.set())
    first = make(runtime, "first", size="64x64", steps=2)
    second = make(runtime, "second", size="96x64", steps=200)  # another batch key: a batch of its own
    thread = run_in_thread(worker)
    try:
        assert storing.wait(30)  # the first is being stored
        wait_for(lambda: len(backend.calls) >= 1 and len(backend.steps) >= 4, 30, "the second batch to run")
        worker.stop()
        thread.join(30)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    done = get(runtime, first.id)
    assert done.status is Status.SUCCEEDED and len(done.images) == 1  # stored before the worker left
    given_back = get(runtime, second.id)
    assert given_back.status is Status.QUEUED and given_back.attempts == 0  # at its next step


def test_a_storage_fault_in_post_processing_fails_only_its_job(runtime: Any, monkeypatch: Any) -> None:
    from sqlalchemy.exc import OperationalError

    runtime.settings = runtime.settings.model_copy(update={"max_batch_images": 1})
    worker = runtime.make_worker(backend=Sleepy(0.02))
    real = runtime.queue.complete

    def flaky(job: Any, *args: Any, **kwargs: Any) -> bool:
        if job.spec.prompt == "unlucky":
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return bool(real(job, *args, **kwargs))

    monkeypatch.setattr(runtime.queue, "complete", flaky)
    jobs = [make(runtime, p, size="64x64", steps=3) for p in ("lucky", "unlucky", "lucky again")]
    thread = run_in_thread(worker)
    try:
        wait_for(lambda: all(get(runtime, j.id).status.finished for j in jobs), 60, "the three jobs")
    finally:
        worker.stop()
        thread.join(30)
    lucky, unlucky, again = (get(runtime, j.id) for j in jobs)
    assert lucky.status is Status.SUCCEEDED and again.status is Status.SUCCEEDED
    assert unlucky.status is Status.FAILED and unlucky.error_code == "storage_error"
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{unlucky.id}") == []  # its bytes removed


def test_a_job_canceled_while_waiting_for_post_processing_writes_nothing(runtime: Any) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_batch_images": 1})
    storing = threading.Event()
    release = threading.Event()
    backend = Sleepy(0.01)
    worker = runtime.make_worker(backend=backend)

    def hold_first(key: str) -> None:
        storing.set()
        release.wait(30)

    worker.blobs = SlowStore(runtime.blobs, 0.0, before=hold_first)
    first, second = (make(runtime, p, size="64x64", steps=2) for p in ("first", "second"))
    thread = run_in_thread(worker)
    try:
        assert storing.wait(30)  # the first is being stored; the second is generated and waits
        wait_for(lambda: len(backend.calls) == 2, 30, "the second to be generated")
        runtime.generations.cancel(runtime.default_project_id, second.id)
        wait_for(lambda: second.id in worker._leases.lost(), 10, "the watcher to see the cancel")
        release.set()
        wait_for(lambda: get(runtime, first.id).status is Status.SUCCEEDED, 30, "the first job")
    finally:
        release.set()
        worker.stop()
        thread.join(30)
    assert get(runtime, second.id).status is Status.CANCELED
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{second.id}") == []
    assert [key.split("/")[1] for key, _ in worker.blobs.puts] == [first.id]  # nothing written for it


def test_the_in_process_worker_reports_its_stage_times_on_metrics(client: Any) -> None:
    r = client.post(
        "/api/v1/generations",
        json={"prompt": "a red circle", "size": "64x64", "steps": 2},
        headers={"Prefer": "wait=60"},
    )
    assert r.status_code in (200, 201) and r.json()["data"]["status"] == "success", r.text
    from prometheus_client.parser import text_string_to_metric_families

    body = client.get("/metrics").text
    samples = {
        (s.name, s.labels.get("stage")): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("easel_worker_") and s.name != "easel_worker_last_heartbeat_timestamp_seconds"
    }
    assert samples[("easel_worker_images_stored_total", None)] >= 1
    assert samples[("easel_worker_batches_total", None)] >= 1
    for stage in ("db", "inputs", "generate", "encode", "store"):
        assert ("easel_worker_cpu_seconds_total", stage) in samples
    assert samples[("easel_worker_cpu_seconds_total", "encode")] > 0
    assert samples[("easel_worker_busy_seconds_total", "generate")] > 0


def test_a_claim_after_a_batch_waits_for_the_clients_coming_back(runtime: Any, monkeypatch: Any) -> None:
    # Room for a loaded machine (the suite's other process starts servers meanwhile): a claim may wait
    # up to the whole last call (1 s) for a full batch, and a create may take 1 s to come.
    monkeypatch.setattr(worker_module, "GATHER_MAX_SECONDS", 2.0)
    monkeypatch.setattr(worker_module, "GATHER_FRACTION", 1.0)
    monkeypatch.setattr(worker_module, "GATHER_QUIET_SECONDS", 1.0)
    backend = Sleepy(0.25)  # 4 steps: 1 s a call
    worker = runtime.make_worker(backend=backend)
    first = [make(runtime, f"first {i}", size="64x64", steps=4) for i in range(4)]
    thread = run_in_thread(worker)
    try:
        wait_for(lambda: len(backend.calls) == 1, 60, "the first batch")
        # The four clients come back one by one; without gathering the first would run alone.
        later = []
        for i in range(4):
            later.append(make(runtime, f"later {i}", size="64x64", steps=4))
            time.sleep(0.03)
        wait_for(lambda: all(get(runtime, j.id).status is Status.SUCCEEDED for j in first + later), 60, "all")
    finally:
        worker.stop()
        thread.join(30)
    assert [len(prompts) for _, _, prompts in backend.calls] == [4, 4]


def test_gathering_waits_only_after_a_batch_of_several_images(runtime: Any) -> None:
    worker = runtime.make_worker(backend=Sleepy(0.01))
    worker._recent_images.extend([1, 1])
    worker._last_call_seconds = 1.0
    started = time.monotonic()
    worker._gather()  # after batches of one image: no wait (batch 1 keeps its latency)
    assert time.monotonic() - started < 0.05
    worker._recent_images.extend([4, 2])  # the largest recent batch counts, not the last
    worker._last_call_seconds = 0.4
    started = time.monotonic()
    worker._gather()  # nothing queued: waits a quarter of the last call, then claims what there is
    assert 0.1 - 0.01 <= time.monotonic() - started < 1.0
    worker._last_call_seconds = 100.0
    started = time.monotonic()
    worker._gather()  # a long call: no job comes in, so the quiet period ends the wait
    assert worker_module.GATHER_QUIET_SECONDS - 0.01 <= time.monotonic() - started < 0.9
    make(runtime, "a", size="64x64", n=4)
    started = time.monotonic()
    worker._gather()  # a batch as large as the last is queued: no wait
    assert time.monotonic() - started < 0.1
