"""Previews on the native event stream (`previews: N`), over real HTTP with a worker making real
previews of the tiny model, and resuming a stream with Last-Event-ID."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import httpx
from PIL import Image
from test_events import Event, create, http, sse  # noqa: F401 - `http` is the fixture

from easel.api.native.events import _Stream
from easel.service.events import JobEvent


def _picture(uri: str) -> Image.Image:
    head, _, data = uri.partition(",")
    assert head == "data:image/jpeg;base64"
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    assert im.format == "JPEG"
    return im


def test_previews_arrive_between_the_steps(http: httpx.Client, runtime: Any) -> None:  # noqa: F811
    gen = create(http, size="64x64", steps=8, previews=3, n=2, seed=5)
    worker = runtime.make_worker()
    runner = threading.Thread(target=worker.run_once)
    seen: list[Event] = []
    with http.stream("GET", f"/api/v1/generations/{gen['id']}/events") as r:
        for ev in sse(r):
            seen.append(ev)
            if ev.name == "queued":
                runner.start()
    runner.join(60)
    previews = [e for e in seen if e.name == "preview"]
    assert [(p.data["step"], p.data["index"], p.data["imageIndex"]) for p in previews] == [
        (2, 0, 0),
        (2, 0, 1),
        (4, 1, 0),
        (4, 1, 1),
        (6, 2, 0),
        (6, 2, 1),
    ]
    for p in previews:
        assert p.data["count"] == 3 and p.data["total"] == 8
        assert _picture(p.data["image"]).size == (64, 64) == (p.data["width"], p.data["height"])
    # In order with the steps: a step's preview comes before that step's progress event.
    order = [(e.name, e.data.get("step")) for e in seen if e.name in ("preview", "progress")]
    assert order.index(("preview", 2)) < order.index(("progress", 2)) < order.index(("preview", 4))
    # Ids say the step and the previews told so far: a reconnect resumes from there.
    assert [e.id for e in previews] == ["1.1", "1.2", "3.3", "3.4", "5.5", "5.6"]
    assert seen[-1].name == "succeeded" and seen[-1].id == "8.6"
    assert "previews" not in seen[-1].data or seen[-1].data.get("outputImages")  # previews are not stored


def test_a_stream_that_joins_late_gets_the_latest_preview_once(http: httpx.Client, runtime: Any) -> None:  # noqa: F811
    gen = create(http, size="64x64", steps=8, previews=2)
    picture = Image.new("RGB", (64, 64), (10, 200, 10))
    data = {"step": 3, "total": 8, "index": 0, "count": 2, "image_index": 0, "width": 64, "height": 64}
    runtime.events.publish(JobEvent(gen["id"], "preview", data | {"image": picture}))

    def first_events(headers: dict[str, str]) -> list[Event]:
        with http.stream("GET", f"/api/v1/generations/{gen['id']}/events", headers=headers) as r:
            got = []
            for ev in sse(r):
                got.append(ev)
                if ev.name == "queued":
                    return got
        return got

    joined = first_events({})
    assert [e.name for e in joined] == ["preview", "queued"]
    assert _picture(joined[0].data["image"]).getpixel((5, 5))[1] > 150
    resumed = first_events({"Last-Event-ID": joined[0].id or ""})
    assert [e.name for e in resumed] == ["queued"]  # not told again


def test_last_event_id_skips_what_the_client_had() -> None:
    told = _Stream(images=1, last_event_id="12.2")
    assert told.progress(10, 20) == [] and told.progress(12, 20) == []
    assert told.progress(13, 20) != []
    old = JobEvent("g", "preview", {"index": 1, "image_index": 0})
    new = JobEvent("g", "preview", {"index": 2, "image_index": 0})
    assert not told.wants_preview(old) and told.wants_preview(new)
    assert _Stream(images=1, last_event_id="junk").step == 0
