"""Progress of a generation as server-sent events (native API).

`GET /api/v1/generations/{id}/events` streams `text/event-stream`:

- `queued` `{"position": p}`: while pending, each time the queue position changes;
- `progress` `{"step": i, "total": n}`: while processing, steps strictly increasing;
- `preview` `{"step", "total", "index", "count", "imageIndex", "width", "height", "image"}`: when the
  generation was created with `previews: N`, the picture of the work in progress at N steps spread over
  the run (`image` a `data:image/jpeg;base64,...` URI; `index` 0..count-1; one per image of the job);
- then one final event, `succeeded`, `failed` or `canceled`, whose data is the generation as
  `GET /api/v1/generations/{id}` returns it, and the stream ends.

Steps come from the in-process EventHub as the worker publishes them (every step, at once); the record
is also re-read from the store every `POLL_SECONDS`, which covers workers in other processes (there,
steps in between two reads are coalesced into the latest one; a worker's end reaches every API process at
once, easel/runtime.py FinishedRelay). Previews come from the EventHub only (this process's worker, or a
worker on this host through the relay); the latest one is kept, so a stream that (re)connects mid-run
starts with it. Every event has an `id:` `<step>.<previews>` (the step and the number of previews told
so far); a client reconnecting with `Last-Event-ID` is not told again what it had (progress up to that
step, previews before that number). A comment line is sent every `HEARTBEAT_SECONDS` so that proxies
keep the connection open.
A client that disconnects ends its stream: Starlette cancels it, and it checks before each read too.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from easel.api.deps import EventsDep, GenerationsDep, LinksDep
from easel.api.native.common import GenRead, generation_body, native_router
from easel.domain.generation import Generation, Status
from easel.service.events import JobEvent
from easel.service.previews import preview_bytes

router = native_router()

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0

FINAL_EVENT = {Status.SUCCEEDED: "succeeded", Status.FAILED: "failed", Status.CANCELED: "canceled"}


class _Stream:
    """What one client has been told so far, and the next events to tell it."""

    def __init__(self, images: int = 1, last_event_id: str | None = None) -> None:
        self.images = images  # the job's n: each preview step tells one preview per image
        self.position: int | None = None
        self.step = 0
        self.previews = 0  # previews told (the next one's index + 1 for a one-image job)
        self.attempts: int | None = None
        if last_event_id:  # a reconnecting client: what it had, `<step>.<previews>`
            step, _, previews = last_event_id.strip().partition(".")
            if step.isdigit() and previews.isdigit():
                self.step, self.previews = int(step), int(previews)

    def event(self, name: str, data: dict[str, Any]) -> str:
        body = json.dumps(data, separators=(",", ":"))
        return f"id: {self.step}.{self.previews}\nevent: {name}\ndata: {body}\n\n"

    def _ordinal(self, ev: JobEvent) -> int:
        """The place of a preview among the job's (they come by index, then by image)."""
        return int(ev.data["index"]) * self.images + int(ev.data.get("image_index", 0))

    def wants_preview(self, ev: JobEvent) -> bool:
        return self._ordinal(ev) >= self.previews

    def preview(self, ev: JobEvent, image: bytes, mime: str) -> str:
        d = ev.data
        self.previews = self._ordinal(ev) + 1
        data = {
            "step": d["step"],
            "total": d["total"],
            "index": d["index"],
            "count": d.get("count"),
            "imageIndex": d.get("image_index", 0),
            "width": d["width"],
            "height": d["height"],
            "image": f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}",
        }
        return self.event("preview", data)

    def progress(self, step: int, total: int) -> list[str]:
        if step <= self.step:
            return []
        self.step = step
        self.position = None
        return [self.event("progress", {"step": step, "total": total})]

    def state(self, gen: Generation) -> list[str]:
        """Events for the record as read from the store (the final one excepted)."""
        if gen.status is Status.QUEUED:  # again (released, retried): the next run counts from step 1
            self.step, self.attempts = 0, None
            if gen.queue_position != self.position:
                self.position = gen.queue_position
                return [self.event("queued", {"position": gen.queue_position})]
        elif gen.status is Status.RUNNING:
            if self.attempts is not None and gen.attempts != self.attempts:  # rescued by another worker
                self.step = 0
            self.attempts = gen.attempts
            return self.progress(gen.progress_step, gen.progress_total)
        return []


_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"description": "Server-sent events", "content": {"text/event-stream": {}}}
}


@router.get("/generations/{generation_id}/events", response_class=StreamingResponse, responses=_STREAM)
async def generation_events(
    generation_id: str,
    request: Request,
    svc: GenerationsDep,
    events: EventsDep,
    links: LinksDep,
    principal: GenRead,
) -> StreamingResponse:
    project = principal.project_id
    first = await anyio.to_thread.run_sync(svc.get, project, generation_id)  # 404 before the stream starts
    last_event_id = request.headers.get("last-event-id")

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        told = _Stream(first.spec.n, last_event_id)
        yield "retry: 1000\n\n"
        with events.subscribe(generation_id) as queue:

            async def from_hub(ev: JobEvent) -> list[str]:
                if ev.kind == "progress":
                    return told.progress(int(ev.data["step"]), int(ev.data["total"]))
                if ev.kind == "preview" and told.wants_preview(ev):
                    image, mime = await anyio.to_thread.run_sync(preview_bytes, ev)
                    return [told.preview(ev, image, mime)]
                return []

            async def hub_events() -> tuple[list[str], bool]:
                """The events waiting in the hub's queue, and whether one said the job finished."""
                out: list[str] = []
                finished = False
                while not queue.empty():
                    ev = queue.get_nowait()
                    finished |= ev.kind == "finished"
                    out += await from_hub(ev)
                return out, finished

            latest = events.latest_preview(generation_id)  # published before this stream began
            if latest is not None and first.spec.previews:
                for chunk in await from_hub(latest):
                    yield chunk
            next_beat = loop.time() + HEARTBEAT_SECONDS
            while True:
                if await request.is_disconnected():  # also when the server does not cancel us itself
                    return
                # Deleted meanwhile: an unfinished one was canceled, a finished one keeps its status.
                gen = await anyio.to_thread.run_sync(
                    lambda: svc.get(project, generation_id, include_deleted=True)
                )
                # Steps published before the read returned come first (they are older than the read).
                chunks, finished = await hub_events()
                for chunk in chunks:
                    yield chunk
                if gen.status.finished:
                    yield told.event(FINAL_EVENT[gen.status], generation_body(request, links, gen))
                    return
                for chunk in told.state(gen):
                    yield chunk
                next_read = loop.time() + (0 if finished else POLL_SECONDS)
                while (now := loop.time()) < next_read:
                    if now >= next_beat:
                        yield ": keep-alive\n\n"
                        next_beat = now + HEARTBEAT_SECONDS
                    try:
                        async with asyncio.timeout(min(next_read, next_beat) - now):
                            ev = await queue.get()
                    except TimeoutError:
                        continue
                    if ev.kind == "finished":
                        break
                    for chunk in await from_hub(ev):
                        yield chunk

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- the project's stream ----------------------------------------------------------------------------

PROJECT_POLL_SECONDS = 0.5
BATCH = 100  # changes told per read at most
OVERLAP = timedelta(seconds=2)  # changes re-read behind the cursor: a transaction that commits late


def _cursor(gen: Generation) -> str:
    return f"{int(gen.updated_at.timestamp() * 1000)}.{gen.id}"


def _since(last_event_id: str | None) -> datetime:
    """Where a stream starts: after the change a reconnecting client had (`<ms>.<id>`), else now."""
    ms, _, _gid = (last_event_id or "").strip().partition(".")
    if ms.isdigit():
        return datetime.fromtimestamp(int(ms) / 1000, UTC)
    return datetime.now(UTC)


@router.get("/events", response_class=StreamingResponse, responses=_STREAM)
async def project_events(
    request: Request, svc: GenerationsDep, links: LinksDep, principal: GenRead
) -> StreamingResponse:
    """Every change of the project's generations, for dashboards: one `generation` event per change
    seen (created, queued again, started, each recorded progress step, ended, deleted; changes within
    one read, PROJECT_POLL_SECONDS, are told once as the latest state) whose data is the
    generation as GET /api/v1/generations/{id} shows it (without queue position and ETA). The id is
    `<updated ms>.<generation id>`: reconnecting with Last-Event-ID resumes after that change; without
    it the stream starts with the changes from now on."""
    project = principal.project_id
    since = _since(request.headers.get("last-event-id"))
    resumed = request.headers.get("last-event-id")

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        told: dict[str, datetime] = {}  # each generation's last change told (bounded by the overlap)
        cursor = since
        if resumed:  # the change the client had is told again only if it changed since
            _ms, _, gid = resumed.strip().partition(".")
            told[gid] = since
        yield "retry: 1000\n\n"
        next_beat = loop.time() + HEARTBEAT_SECONDS
        while True:
            if await request.is_disconnected():
                return
            # One row per generation (its latest change): at most len(told) of them were told already,
            # so this limit always leaves room for BATCH new ones.
            changed = await anyio.to_thread.run_sync(
                svc.changed_since, project, cursor - OVERLAP, BATCH + len(told)
            )
            new = 0
            for gen in changed:
                if told.get(gen.id) is not None and told[gen.id] >= gen.updated_at:
                    continue
                new += 1
                told[gen.id] = gen.updated_at
                cursor = max(cursor, gen.updated_at)
                body = json.dumps(generation_body(request, links, gen), separators=(",", ":"))
                yield f"id: {_cursor(gen)}\nevent: generation\ndata: {body}\n\n"
            horizon = cursor - OVERLAP
            for gid in [g for g, at in told.items() if at < horizon]:
                del told[gid]
            if new >= BATCH:
                continue  # a burst: read on at once
            if loop.time() >= next_beat:
                yield ": keep-alive\n\n"
                next_beat = loop.time() + HEARTBEAT_SECONDS
            await asyncio.sleep(PROJECT_POLL_SECONDS)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
