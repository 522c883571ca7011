"""What a worker survives: one bad job in a batch, a full disk, a database that fails a write, an error
out of the claim. Only the job concerned fails (or goes back to the queue); the worker keeps claiming."""

from __future__ import annotations

import errno
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import easel.storage.local as local_storage
from easel.domain.generation import Status
from easel.domain.spec import GenerationSpec
from easel.storage.local import LocalBlobStore
from support import wait_for

STABLE = r"The model failed to generate this image \(error id ([0-9a-f]{12})\)"
STORAGE = r"The image could not be stored or read; try again later \(error id ([0-9a-f]{12})\)"


def make(runtime: Any, prompt: str, **kw: Any) -> Any:
    return runtime.generations.submit(runtime.principal(), GenerationSpec(prompt=prompt, **kw))


def get(runtime: Any, gid: str) -> Any:
    return runtime.repo.get_generation(runtime.default_project_id, gid)


def db_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


class Picky:
    """The tiny backend, where the prompt `bad` becomes one with a lone surrogate, which the real CLIP
    tokenizer rejects ("TypeError: TextEncodeInput must be Union[...]"), failing the whole call. (The
    stored prompt stays `bad`: PostgreSQL's JSON cannot hold a lone surrogate.)"""

    def __init__(self, inner: Any, before: Any = None) -> None:
        self.inner, self.before = inner, before
        self.batches: list[list[str]] = []

    def generate(self, request: Any, on_step: Any) -> Any:
        prompts = [it.prompt for it in request.items]
        self.batches.append(prompts)
        if self.before is not None:
            self.before(prompts)
        items = [replace(it, prompt="a \ud800 b") if it.prompt == "bad" else it for it in request.items]
        return self.inner.generate(replace(request, items=items), on_step)


def test_one_bad_prompt_fails_alone_and_its_batch_mates_succeed(runtime: Any, caplog: Any) -> None:
    jobs = [make(runtime, p, size="64x64", steps=3, seed=7) for p in ("a red circle", "bad", "a blue square")]
    worker = runtime.make_worker()
    picky = Picky(worker.backend(runtime.catalog.resolve("tiny")))
    worker._backends["diffusers"] = picky
    steps: dict[str, list[int]] = {}
    worker.publish = lambda e: (
        steps.setdefault(e.generation_id, []).append(e.data["step"]) if e.kind == "progress" else None
    )
    with caplog.at_level("INFO", logger="easel.engine.worker"):
        assert worker.run_once()
    # One call for the batch (it failed), then each job alone, in order.
    assert picky.batches == [
        ["a red circle", "bad", "a blue square"],
        ["a red circle"],
        ["bad"],
        ["a blue square"],
    ]
    good, bad, other = (get(runtime, j.id) for j in jobs)
    for g in (good, other):
        assert g.status is Status.SUCCEEDED and len(g.images) == 1 and g.attempts == 1
        assert runtime.blobs.exists(g.images[0].storage_key)
        assert steps[g.id][-3:] == [1, 2, 3]  # progress of its run alone
    assert bad.status is Status.FAILED and bad.error_code == "generation_failed" and bad.images == []
    m = re.fullmatch(STABLE, bad.error_message or "")
    assert m and "TextEncodeInput" not in (bad.error_message or "")
    [logged] = [r for r in caplog.records if m.group(1) in r.getMessage()]
    assert bad.id in logged.getMessage() and logged.exc_info is not None
    assert any("running its 3 remaining jobs one by one" in r.getMessage() for r in caplog.records)
    assert "TypeError: TextEncodeInput must be Union" in caplog.text  # the real tokenizer's error
    assert worker.stats.images == 2


def test_cancel_still_works_while_the_jobs_run_one_by_one(runtime: Any) -> None:
    first, second = (make(runtime, p, size="64x64", steps=3) for p in ("bad", "a blue square"))

    def cancel_the_second_during_the_first(prompts: list[str]) -> None:
        if prompts == ["bad"]:
            runtime.generations.cancel(runtime.default_project_id, second.id)

    worker = runtime.make_worker()
    picky = Picky(worker.backend(runtime.catalog.resolve("tiny")), cancel_the_second_during_the_first)
    worker._backends["diffusers"] = picky
    assert worker.run_once()
    assert get(runtime, first.id).status is Status.FAILED
    canceled = get(runtime, second.id)
    assert canceled.status is Status.CANCELED and canceled.images == []  # fenced: its run stopped at step 1
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{second.id}") == []


class FullDisk:
    """A BlobStore whose puts number `first` to `first + failures - 1` fail with ENOSPC; on a local
    folder the failure happens inside the real atomic write (after the temporary file was created)."""

    def __init__(self, inner: Any, first: int, failures: int) -> None:
        self.inner, self.first, self.failures, self.puts = inner, first, failures, 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        if self.first < self.puts <= self.first + self.failures:
            if isinstance(self.inner, LocalBlobStore):
                real = local_storage.os.fsync

                def full(fd: int) -> None:
                    raise OSError(errno.ENOSPC, "No space left on device")

                local_storage.os.fsync = full  # type: ignore[assignment]
                try:
                    self.inner.put(key, data, content_type)
                finally:
                    local_storage.os.fsync = real
                raise AssertionError("the write should have failed")
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_full_disk_fails_the_job_and_the_worker_keeps_claiming(
    runtime: Any, settings: Any, caplog: Any
) -> None:
    worker = runtime.make_worker()
    worker.blobs = FullDisk(runtime.blobs, first=1, failures=1)  # the job's second image
    thread = threading.Thread(target=worker.run_forever, name="easel-worker", daemon=True)
    with caplog.at_level("ERROR", logger="easel.engine.worker"):
        thread.start()
        try:
            full = make(runtime, "a red circle", size="64x64", steps=2, n=2)
            wait_for(
                lambda: get(runtime, full.id).status is Status.FAILED, 60, "the job on a full disk fails"
            )
            later = [make(runtime, p, size="64x64", steps=2) for p in ("a blue square", "a green star")]
            wait_for(
                lambda: all(get(runtime, j.id).status is Status.SUCCEEDED for j in later),
                60,
                "later jobs succeed",
            )
            assert thread.is_alive()
        finally:
            worker.stop()
            thread.join(30)
    failed = get(runtime, full.id)
    assert failed.error_code == "storage_error" and failed.images == []
    m = re.fullmatch(STORAGE, failed.error_message or "")
    assert m and "No space" not in (failed.error_message or "")
    [logged] = [r for r in caplog.records if m.group(1) in r.getMessage()]
    assert logged.exc_info is not None and "No space left on device" in caplog.text
    # Nothing of the failed job stays behind: no image, no half-written temporary file.
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{full.id}") == []
    assert list(Path(settings.data_dir).rglob("*.tmp")) == []


def test_a_database_error_on_completion_fails_only_that_job(runtime: Any, monkeypatch: Any) -> None:
    jobs = [make(runtime, p, size="64x64", steps=2) for p in ("a red circle", "a blue square")]
    worker = runtime.make_worker()
    real = runtime.queue.complete
    calls = {"n": 0}

    def flaky(job: Any, *args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise db_error()
        return real(job, *args, **kwargs)

    monkeypatch.setattr(runtime.queue, "complete", flaky)
    assert worker.run_once()
    first, second = (get(runtime, j.id) for j in jobs)
    assert first.status is Status.FAILED and first.error_code == "storage_error"
    assert runtime.blobs.keys(f"{runtime.default_project_id}/{first.id}") == []
    assert second.status is Status.SUCCEEDED and len(second.images) == 1


def test_a_database_error_in_a_progress_write_gives_the_jobs_back(runtime: Any, monkeypatch: Any) -> None:
    import easel.engine.worker as worker_module

    # Progress is written at the first step and then at most every PROGRESS_INTERVAL: write every step
    # here, so that the failing write is one in the middle of the run.
    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL", 0.0)
    gen = make(runtime, "a red circle", size="64x64", steps=3)
    worker = runtime.make_worker()
    real = runtime.queue.progress
    calls = {"n": 0}

    def flaky(*args: Any) -> set[str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise db_error()
        return real(*args)

    monkeypatch.setattr(runtime.queue, "progress", flaky)
    assert worker.run_once()
    released = get(runtime, gen.id)
    assert released.status is Status.QUEUED and released.attempts == 0
    assert worker.run_once()
    assert get(runtime, gen.id).status is Status.SUCCEEDED


def test_run_forever_survives_an_error_from_the_claim(
    runtime: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    worker = runtime.make_worker()
    real = runtime.queue.claim_batch
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise db_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.queue, "claim_batch", flaky)
    gen = make(runtime, "a red circle", size="64x64", steps=2)
    thread = threading.Thread(target=worker.run_forever, name="easel-worker", daemon=True)
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="easel.engine.worker"):
        thread.start()
        try:
            wait_for(lambda: get(runtime, gen.id).status is Status.SUCCEEDED, 60, "the job runs after all")
            assert thread.is_alive()
        finally:
            worker.stop()
            thread.join(30)
    assert not thread.is_alive()
    errors = [r.getMessage() for r in caplog.records if "worker loop error" in r.getMessage()]
    # Backoff: 0.5 s after the first error, 1 s after the second.
    assert errors == [
        "worker loop error (1 in a row); retrying in 0.5 s",
        "worker loop error (2 in a row); retrying in 1.0 s",
    ]
    assert time.monotonic() - started >= 1.5


def test_a_failed_local_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: Any) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("p/g/0.png", b"old", "image/png")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_storage.os, "fsync", full)
    with pytest.raises(OSError) as exc:
        store.put("p/g/0.png", b"new bytes", "image/png")
    assert exc.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == ["0.png"]
    assert store.get("p/g/0.png") == b"old"  # the old bytes, untouched
