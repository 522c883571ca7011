"""The client's retries, Idempotency-Key, error shape and stream resume, against scripted answers
(httpx.MockTransport): 429 / 503 sequences, Retry-After, `x-should-retry: false`, a stream that drops
mid-way and is reopened with Last-Event-ID, preview events. The waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import easel_client
import httpx
import pytest
from easel_client import (
    APIConnectionError,
    AsyncEasel,
    BadRequestError,
    CompletedEvent,
    Easel,
    GenerationFailed,
    InternalServerError,
    PreviewEvent,
    ProgressEvent,
    QueuedEvent,
    RateLimitError,
    UnknownEvent,
)

from helpers import open_image, png_bytes

URL = "http://easel.test"


def gen_json(gid: str = "g1", status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {"id": gid, "status": status, "prompt": "p", "outputImages": [], **extra}


def ok(data: Any, status: int = 201) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data})


def error(
    status: int, code: str, message: str = "no", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"success": False, "error": {"code": code, "message": message, "fields": []}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers requests in order; records each request."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(easel_client._sync, "_sleep", waits.append)
    monkeypatch.setattr(easel_client._async, "_sleep", async_sleep)
    return waits


def client(script: Script, **kw: Any) -> Easel:
    return Easel(URL, "easel_sk_test", http_client=httpx.Client(transport=httpx.MockTransport(script)), **kw)


def test_503_then_429_then_created_keeps_one_idempotency_key(slept: list[float]) -> None:
    script = Script(
        error(503, "INTERNAL_ERROR"),
        error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "7"}),
        ok(gen_json()),
        ok(gen_json("g2")),
        ok(gen_json("g3")),
    )
    easel = client(script)
    gen = easel.submit("a cat", negative_prompt="dog", image_size="thumbnail", loras=[("ink", 0.5)], n=2)
    assert gen.id == "g1" and gen.status == "pending"
    keys = [r.headers["idempotency-key"] for r in script.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and len(keys[0]) >= 32
    assert 0.375 <= slept[0] <= 0.5 and slept[1] == 7.0  # backoff, then the server's Retry-After
    body = json.loads(script.requests[0].content)
    assert body == {
        "prompt": "a cat",
        "negativePrompt": "dog",
        "imageSize": "thumbnail",
        "loras": [{"name": "ink", "scale": 0.5}],
        "n": 2,
    }
    assert script.requests[0].headers["authorization"] == "Bearer easel_sk_test"
    assert script.requests[0].url == f"{URL}/api/v1/generations"
    easel.submit("another")  # a new create, a new key
    assert script.requests[3].headers["idempotency-key"] != keys[0]
    easel.submit("mine", idempotency_key="k-1")
    assert script.requests[-1].headers["idempotency-key"] == "k-1"


def test_retry_after_as_an_http_date_and_in_ms(slept: list[float]) -> None:
    script = Script(
        error(503, "X", headers={"retry-after-ms": "250"}),
        error(503, "X", headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}),  # in the past: at once
        ok(gen_json()),
    )
    client(script).submit("p")
    assert slept == [0.25, 0.0]


def test_no_retry_when_the_server_says_so(slept: list[float]) -> None:
    script = Script(error(503, "INTERNAL_ERROR", "model broke", {"x-should-retry": "false"}))
    with pytest.raises(InternalServerError) as err:
        client(script).submit("p")
    assert (err.value.status, err.value.code, err.value.message) == (503, "INTERNAL_ERROR", "model broke")
    assert len(script.requests) == 1 and slept == []


def test_retries_run_out(slept: list[float]) -> None:
    script = Script(*[error(429, "QUEUE_LIMIT_EXCEEDED", "full", {"Retry-After": "3"}) for _ in range(3)])
    with pytest.raises(RateLimitError) as err:
        client(script, max_retries=2).submit("p")
    assert err.value.code == "QUEUE_LIMIT_EXCEEDED" and err.value.retry_after == 3.0
    assert slept == [3.0, 3.0] and len(script.requests) == 3
    assert len({r.headers["idempotency-key"] for r in script.requests}) == 1


def test_a_retry_after_longer_than_allowed_is_raised_at_once(slept: list[float]) -> None:
    script = Script(error(429, "RATE_LIMIT_EXCEEDED", "slow down", {"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as err:
        client(script).get("g1")
    assert err.value.retry_after == 3600 and slept == [] and len(script.requests) == 1


def test_client_errors_are_not_retried_and_carry_fields(slept: list[float]) -> None:
    body = {
        "success": False,
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "Invalid request: seed: too big",
            "fields": [{"field": "seed", "message": "too big"}],
        },
    }
    script = Script(httpx.Response(400, json=body))
    with pytest.raises(BadRequestError) as err:
        client(script).submit("p", seed=2**40)
    assert err.value.fields[0].field == "seed" and err.value.fields[0].message == "too big"
    assert "seed: too big" in str(err.value) and slept == [] and len(script.requests) == 1


def test_connection_errors_are_retried_then_raised(slept: list[float]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    script = Script(refuse, refuse, ok(gen_json(), 200))
    assert client(script).get("g1").id == "g1" and len(slept) == 2
    with pytest.raises(APIConnectionError):
        client(Script(refuse, refuse), max_retries=1).get("g1")


def test_async_retries_with_one_idempotency_key(slept: list[float]) -> None:
    script = Script(error(502, "BAD_GATEWAY"), error(429, "X", headers={"Retry-After": "2"}), ok(gen_json()))

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        async with http, AsyncEasel(URL, "k", http_client=http) as easel:
            assert (await easel.submit("p")).id == "g1"

    asyncio.run(main())
    assert len({r.headers["idempotency-key"] for r in script.requests}) == 1 and len(script.requests) == 3
    assert slept[1] == 2.0


def test_generate_raises_on_failure(slept: list[float]) -> None:
    failed = gen_json(status="failed", errorCode="worker_error", errorMessage="out of memory")
    script = Script(ok(gen_json()), sse([("failed", "1.0", failed)]))
    with pytest.raises(GenerationFailed) as err:
        client(script).generate("p")
    assert err.value.code == "worker_error" and "out of memory" in str(err.value)
    assert err.value.generation.status == "failed"


# ------------------------------------------------------------------------------------------------------
# Streams


def frames(events: list[tuple[str, str, Any]]) -> bytes:
    out = "retry: 10\n\n: keep-alive\n\n"
    for name, eid, data in events:
        out += f"id: {eid}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
    return out.encode()


def sse(events: list[tuple[str, str, Any]]) -> httpx.Response:
    return httpx.Response(200, content=frames(events), headers={"content-type": "text/event-stream"})


class Dropping(httpx.SyncByteStream):
    """A stream that sends `data`, then breaks like a lost connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection lost")


def test_stream_resumes_with_last_event_id(slept: list[float]) -> None:
    done = gen_json(status="success", outputImages=[{"id": "i1", "storageUrl": f"{URL}/f", "width": 8}])
    first = frames([("queued", "0.0", {"position": 2}), ("progress", "1.0", {"step": 1, "total": 3})])
    script = Script(
        httpx.Response(200, stream=Dropping(first), headers={"content-type": "text/event-stream"}),
        # a server that starts over: the step already told is not yielded twice
        sse(
            [
                ("progress", "1.0", {"step": 1, "total": 3}),
                ("progress", "2.0", {"step": 2, "total": 3}),
                ("progress", "3.0", {"step": 3, "total": 3}),
                ("succeeded", "3.0", done),
                ("progress", "9.0", {"step": 9, "total": 3}),  # after the end: never read
            ]
        ),
    )
    events = list(client(script).stream("g1"))
    kinds = [QueuedEvent, ProgressEvent, ProgressEvent, ProgressEvent, CompletedEvent]
    assert [type(e) for e in events] == kinds
    assert [e.step for e in events if isinstance(e, ProgressEvent)] == [1, 2, 3]
    assert "last-event-id" not in script.requests[0].headers
    assert script.requests[1].headers["last-event-id"] == "1.0"
    assert script.requests[1].headers["accept"] == "text/event-stream"
    assert slept == [0.01]  # the server's `retry:` delay
    final = events[-1]
    assert isinstance(final, CompletedEvent) and final.generation.images[0].url == f"{URL}/f"


def test_a_stream_that_keeps_dropping_raises(slept: list[float]) -> None:
    broken = [
        httpx.Response(200, stream=Dropping(b": hi\n\n"), headers={"content-type": "text/event-stream"})
        for _ in range(3)
    ]
    with pytest.raises(APIConnectionError):
        list(client(Script(*broken), max_retries=2).stream("g1"))


def test_preview_events_and_unknown_events() -> None:
    jpeg = png_bytes((16, 8))  # any image bytes
    uri = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    preview = {"step": 2, "total": 4, "index": 0, "count": 2, "imageIndex": 0, "width": 16, "height": 8}
    script = Script(
        sse(
            [
                ("preview", "2.1", preview | {"image": uri}),
                ("something-new", "2.1", {"x": 1}),
                ("succeeded", "4.1", gen_json(status="success")),
            ]
        )
    )
    events = list(client(script).stream("g1"))
    p = events[0]
    assert isinstance(p, PreviewEvent)
    assert (p.step, p.total, p.index, p.count, p.image_index) == (2, 4, 0, 2, 0)
    assert p.media_type == "image/png" and open_image(p.image_bytes()).size == (p.width, p.height) == (16, 8)
    assert p.data["count"] == 2
    assert events[1] == UnknownEvent("something-new", {"x": 1}, "2.1")
    assert isinstance(events[2], CompletedEvent)


def test_async_stream_resumes(slept: list[float]) -> None:
    class AsyncDropping(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield frames([("progress", "1.0", {"step": 1, "total": 2})])
            raise httpx.ReadError("connection lost")

    script = Script(
        httpx.Response(200, stream=AsyncDropping(), headers={"content-type": "text/event-stream"}),
        sse([("progress", "2.0", {"step": 2, "total": 2}), ("failed", "2.0", gen_json(status="failed"))]),
    )

    async def main() -> list[Any]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        async with http, AsyncEasel(URL, "k", http_client=http) as easel:
            return [ev async for ev in easel.stream("g1")]

    events = asyncio.run(main())
    assert [e.type for e in events] == ["progress", "progress", "failed"]
    assert script.requests[1].headers["last-event-id"] == "1.0"


def test_image_downloads_send_no_key_and_are_retried(slept: list[float]) -> None:
    done = gen_json(status="success", outputImages=[{"id": "i1", "storageUrl": "https://s3.test/f?sig=1"}])
    script = Script(ok(done, 200), error(503, "X"), httpx.Response(200, content=b"PNGDATA"))
    easel = client(script)
    assert easel.get("g1").images[0].bytes() == b"PNGDATA"
    assert "authorization" not in script.requests[2].headers and len(slept) == 1
