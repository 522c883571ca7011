"""Progress of a generation as server-sent events (native API).

`GET /api/v1/generations/{id}/events` streams `text/event-stream`:

- `queued` `{"position": p}`: while pending, each time the queue position changes;
- `progress` `{"step": i, "total": n}`: while processing, steps strictly increasing;
- then one final event, `succeeded`, `failed` or `canceled`, whose data is the generation as
  `GET /api/v1/generations/{id}` returns it, and the stream ends.

Steps come from the in-process EventHub as the worker publishes them (every step, at once); the record
is also re-read from the store every `POLL_SECONDS`, which covers workers in other processes (there,
steps in between two reads are coalesced into the latest one). Every event has an `id:` (its number in
this stream); a comment line is sent every `HEARTBEAT_SECONDS` so that proxies keep the connection open.
A client that disconnects ends its stream: Starlette cancels it, and it checks before each read too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from easel.api.deps import EventsDep, GenerationsDep, LinksDep
from easel.api.native.common import GenRead, generation_body, native_router
from easel.domain.generation import Generation, Status
from easel.service.events import JobEvent

router = native_router()

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0

FINAL_EVENT = {Status.SUCCEEDED: "succeeded", Status.FAILED: "failed", Status.CANCELED: "canceled"}


class _Stream:
    """What one client has been told so far, and the next events to tell it."""

    def __init__(self) -> None:
        self.seq = 0
        self.position: int | None = None
        self.step = 0
        self.attempts: int | None = None

    def event(self, name: str, data: dict[str, Any]) -> str:
        self.seq += 1
        return f"id: {self.seq}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

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
    await anyio.to_thread.run_sync(svc.get, project, generation_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        told = _Stream()
        yield "retry: 1000\n\n"
        with events.subscribe(generation_id) as queue:

            def hub_events() -> tuple[list[str], bool]:
                """The events waiting in the hub's queue, and whether one said the job finished."""
                out: list[str] = []
                finished = False
                while not queue.empty():
                    ev = queue.get_nowait()
                    finished |= ev.kind == "finished"
                    out += _from_hub(told, ev)
                return out, finished

            next_beat = loop.time() + HEARTBEAT_SECONDS
            while True:
                if await request.is_disconnected():  # also when the server does not cancel us itself
                    return
                # Deleted meanwhile: an unfinished one was canceled, a finished one keeps its status.
                gen = await anyio.to_thread.run_sync(
                    lambda: svc.get(project, generation_id, include_deleted=True)
                )
                # Steps published before the read returned come first (they are older than the read).
                chunks, finished = hub_events()
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
                    for chunk in _from_hub(told, ev):
                        yield chunk

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _from_hub(told: _Stream, ev: JobEvent) -> list[str]:
    if ev.kind == "progress":
        return told.progress(int(ev.data["step"]), int(ev.data["total"]))
    return []
