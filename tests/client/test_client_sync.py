"""`easel_client.Easel` against a real `easel serve` (tests/client/conftest.py): generate, submit / get /
wait / cancel / list, the event stream, uploads as inputs, typed errors, and the queue cap's 429 retried
with the same Idempotency-Key."""

from __future__ import annotations

from pathlib import Path

import easel_client
import httpx
import pytest
from easel_client import (
    AuthenticationError,
    BadRequestError,
    CompletedEvent,
    Easel,
    GenerationCanceled,
    NotFoundError,
    ProgressEvent,
    QueuedEvent,
    RateLimitError,
    WaitTimeout,
)

from helpers import open_image, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("client")]

SMALL = {"size": "64x64"}


def test_generate_returns_images_that_download_and_save(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        gen = easel.generate("a red circle", seed=7, n=2, **SMALL)
        assert gen.status == "success" and gen.succeeded and gen.done
        assert (gen.width, gen.height, gen.n, gen.seed, gen.steps) == (64, 64, 2, 7, 4)
        assert [i.seed for i in gen.images] == [7, 8] and [i.index for i in gen.images] == [0, 1]
        assert gen.image is gen.images[0]
        data = gen.images[0].bytes()
        assert open_image(data).size == (64, 64) and data.startswith(b"\x89PNG")
        assert len(data) == gen.images[0].file_size
        saved = gen.images[1].save(tmp_path / "second.png")
        assert saved.read_bytes() == gen.images[1].bytes() and saved.read_bytes() != data
        # the same seed draws the same picture
        again = easel.generate("a red circle", seed=7, **SMALL)
        assert again.id != gen.id and again.images[0].bytes() == data


def test_submit_get_wait_list(server) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        gen = easel.submit(
            "a blue square", negative_prompt="green", aspect_ratio="1:1", image_size="thumbnail", seed=3
        )
        assert gen.status in ("pending", "processing", "success")
        assert gen.negative_prompt == "green" and gen.seed == 3
        got = easel.get(gen.id)
        assert got.id == gen.id and got.original_prompt == "a blue square"
        done = easel.wait(gen.id, timeout=120)
        assert done.status == "success" and done.width == 256 and len(done.images) == 1
        assert done.finished_at is not None and done.progress is not None and done.progress.step == 4
        page = easel.list(status="success", limit=100)
        assert gen.id in [g.id for g in page] and page.total is not None and page.total >= 1
        assert page.limit == 100
        assert all(g.status == "success" for g in page.items)
        first = easel.list(limit=1)
        assert len(first) == 1 and first.offset == 0 and first.total is not None
        assert first.has_more == (first.total > 1) == (first.next_cursor is not None)
        # Cursors walk the same list as one big page, once each.
        walked, cursor = [], None
        while True:
            part = easel.list(limit=2, cursor=cursor, include_total=True)
            walked += [g.id for g in part]
            if part.next_cursor is None:
                break
            cursor = part.next_cursor
        assert walked == [g.id for g in easel.list(limit=100)] and part.total == len(walked)
        ended = easel.list(status=["success", "canceled"], limit=100)
        assert gen.id in [g.id for g in ended] and {g.status for g in ended} <= {"success", "canceled"}


def test_unknown_params_pass_through_to_the_server(server) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        with pytest.raises(BadRequestError) as err:
            easel.submit("x", no_such_field=1)
        assert err.value.status == 400 and err.value.code == "VALIDATION_ERROR"
        assert [(f.field, f.message) for f in err.value.fields] == [("no_such_field", "unknown field")]
        with pytest.raises(BadRequestError) as err:
            easel.submit("x", aspect_ratio="7:3")
        assert [f.field for f in err.value.fields] == ["aspectRatio"]


def test_typed_errors(server) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        with pytest.raises(NotFoundError) as err:
            easel.get("does-not-exist")
        assert (err.value.status, err.value.code) == (404, "GENERATION_NOT_FOUND")
        assert "does-not-exist" in err.value.message
    with Easel(server.url, "easel_sk_wrong") as easel, pytest.raises(AuthenticationError) as auth:
        easel.list()
    assert (auth.value.status, auth.value.code) == (401, "UNAUTHORIZED")


def test_environment_defaults(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EASEL_BASE_URL", server.url + "/api/v1/")
    monkeypatch.setenv("EASEL_API_KEY", server.key)
    with Easel() as easel:
        assert easel.base_url == server.url
        assert easel.list(limit=1).limit == 1


def test_stream_yields_progress_then_the_final_event(server) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        gen = easel.submit("a yellow star", steps=6, **SMALL)
        events = list(easel.stream(gen.id))
    assert events, "no events"
    last = events[-1]
    assert isinstance(last, CompletedEvent) and last.type == "succeeded"
    assert last.generation.id == gen.id and last.generation.status == "success"
    assert len(last.generation.images) == 1 and last.generation.images[0].bytes().startswith(b"\x89PNG")
    assert all(not isinstance(e, CompletedEvent) for e in events[:-1])
    steps = [e.step for e in events if isinstance(e, ProgressEvent)]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 6
    assert {e.total for e in events if isinstance(e, ProgressEvent)} == {6}
    assert all(e.id for e in events)  # every event has an id (Last-Event-ID on a reconnect)
    # a finished job's stream is its final event at once
    with Easel(server.url, server.key) as easel:
        again = list(easel.stream(gen.id))
    assert [type(e) for e in again] == [CompletedEvent]


def test_previews_on_the_stream(server) -> None:  # type: ignore[no-untyped-def]
    with Easel(server.url, server.key) as easel:
        try:
            gen = easel.submit("a green triangle", steps=6, previews=2, **SMALL)
        except BadRequestError as e:  # a server without previews (docs/api/native.md)
            pytest.skip(f"this server has no previews: {e}")
        events = list(easel.stream(gen.id))
    previews = [e for e in events if isinstance(e, easel_client.PreviewEvent)]
    assert isinstance(events[-1], CompletedEvent) and events[-1].type == "succeeded"
    assert previews, [e.type for e in events]
    for p in previews:
        assert p.image.startswith("data:image/") and p.media_type is not None
        im = open_image(p.image_bytes())
        assert im.size == (p.width, p.height)
        assert p.total == 6 and p.step is not None and 1 <= p.step <= 6


def test_files_bytes_and_images_as_inputs(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "source.png"
    source.write_bytes(png_bytes((64, 64), (10, 200, 10)))
    with Easel(server.url, server.key) as easel:
        uploaded = easel.upload(source, folder="client-tests")
        assert uploaded.id and uploaded.folder == "client-tests"
        assert (uploaded.width, uploaded.height) == (64, 64)
        assert open_image(uploaded.bytes()).size == (64, 64)
        assert easel.get_image(uploaded.id).id == uploaded.id
        for given in (source, str(source), source.read_bytes(), uploaded, uploaded.id):
            gen = easel.generate("a green field", source_image=given, strength=0.5, seed=1, **SMALL)
            assert gen.task == "image-to-image" and gen.status == "success", (given, gen)
        with source.open("rb") as f:
            gen = easel.generate("a green field", source_image=f, strength=0.5, seed=1, **SMALL)
        assert gen.task == "image-to-image" and gen.status == "success"
        with pytest.raises(BadRequestError) as err:  # a string that is no file is an image id
            easel.generate("x", source_image="no-such-image", strength=0.5, **SMALL)
        assert [f.field for f in err.value.fields] == ["sourceImageId"]


def test_cancel_and_deadline_on_an_idle_server(idle_server) -> None:  # type: ignore[no-untyped-def]
    with Easel(idle_server.url, idle_server.key) as easel:
        gen = easel.submit("never runs", **SMALL)
        assert gen.status == "pending"
        events = easel.stream(gen.id)
        first = next(events)
        assert isinstance(first, QueuedEvent) and first.position is not None and first.position >= 1
        events.close()
        with pytest.raises(WaitTimeout) as timeout:
            easel.wait(gen.id, timeout=1)
        assert timeout.value.generation_id == gen.id
        canceled = easel.cancel(gen.id)
        assert canceled.status == "canceled" and canceled.id == gen.id
        assert easel.wait(gen.id).status == "canceled"  # wait returns how it ended
        assert gen.id in [g.id for g in easel.list(status="canceled", limit=100)]
        # generate raises a typed error for a job that does not succeed: a deadline nobody met
        with pytest.raises(GenerationCanceled) as err:
            easel.generate("too late", cancel_after=1, **SMALL)
        assert err.value.generation.status == "canceled" and err.value.code == "deadline_exceeded"


def test_queue_cap_429_is_retried_with_the_same_idempotency_key(  # type: ignore[no-untyped-def]
    idle_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = idle_server.create_key(maxQueued=1)
    slept: list[float] = []
    monkeypatch.setattr(easel_client._sync, "_sleep", slept.append)
    seen: list[tuple[str, int, str | None]] = []

    def record(response: httpx.Response) -> None:
        if response.request.url.path == "/api/v1/generations":
            seen.append(
                (
                    response.request.headers["idempotency-key"],
                    response.status_code,
                    response.headers.get("retry-after"),
                )
            )

    http = httpx.Client(event_hooks={"response": [record]}, timeout=60)
    with http, Easel(idle_server.url, key, http_client=http, max_retries=2) as easel:
        first = easel.submit("one", **SMALL)
        assert first.status == "pending"
        with pytest.raises(RateLimitError) as err:
            easel.submit("two", **SMALL)
        assert err.value.status == 429 and err.value.code == "QUEUE_LIMIT_EXCEEDED"
        assert err.value.retry_after is not None and err.value.retry_after >= 1
        assert "cap" in err.value.message
        # the first create, then the refused one and its two retries: one key for those three
        assert [s for _, s, _ in seen] == [201, 429, 429, 429]
        keys = [k for k, _, _ in seen]
        assert keys[1] == keys[2] == keys[3] and keys[0] != keys[1]
        assert slept == [float(after) for _, _, after in seen[1:3]]  # Retry-After, honoured
        easel.cancel(first.id)  # frees the cap
        assert easel.submit("three", **SMALL).status == "pending"
