"""OpenAI's answers: submit the job, wait for it (up to EASEL_OPENAI_TIMEOUT_SECONDS) and answer with its
images, or with an error that tells OpenAI's SDKs not to retry (a retry would create a second job); or,
with `stream=true`, server-sent events: partial images while it runs, then the completed images."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from easel.api.deps import image_url
from easel.api.openai.protocol import ResponseFormat, images_response, usage
from easel.api.scheduling import scheduled
from easel.domain.errors import EaselError, TimedOut
from easel.domain.failures import GENERATION_FAILED, client_message
from easel.domain.generation import Generation, Status
from easel.domain.inputs import ImageInput
from easel.domain.keys import Principal
from easel.domain.scheduling import DEADLINE_EXCEEDED
from easel.domain.spec import GenerationSpec, OutputFormat
from easel.service.container import Services
from easel.service.events import JobEvent
from easel.service.previews import preview_bytes

NO_RETRY = {"x-should-retry": "false"}
log = logging.getLogger(__name__)


async def generate(
    request: Request,
    svc: Services,
    principal: Principal,
    spec: GenerationSpec,
    inputs: Sequence[ImageInput],
    fmt: ResponseFormat,
    scheduling: dict[str, Any],
) -> dict[str, Any]:
    """`scheduling`: what the X-Easel-Priority and Cancel-After headers ask for (api/scheduling.py)."""
    generations = svc.generations
    spec = scheduled(spec, scheduling)
    gen = await anyio.to_thread.run_sync(partial(generations.submit, principal, spec, inputs, estimate=False))
    timeout = svc.settings.openai_timeout_seconds
    gen = await generations.wait(principal.project_id, gen.id, timeout, capped=False)
    check_finished(gen, timeout)
    images = generations.images_of(gen)
    if fmt is ResponseFormat.URL:
        values = [image_url(request, svc.links, img) for img in images]
    else:
        blobs = await anyio.to_thread.run_sync(lambda: [svc.library.data(img) for img in images])
        values = [base64.b64encode(b).decode("ascii") for b in blobs]
    return images_response(gen, fmt, values)


def check_finished(gen: Generation, timeout: float) -> None:
    """Raise OpenAI's error for a generation that did not succeed (failed, canceled, still running)."""
    if gen.status is Status.FAILED:
        raise EaselError(
            client_message(gen.error_code, gen.error_message),
            status=500,
            code=gen.error_code or GENERATION_FAILED,
            headers=dict(NO_RETRY),
        )
    if gen.status is Status.CANCELED and gen.error_code == DEADLINE_EXCEEDED:
        err = TimedOut(
            f"Generation {gen.id} had not started by its deadline (Cancel-After) and was canceled "
            "without running; it was not charged"
        )
        err.code = DEADLINE_EXCEEDED
        err.headers.update(NO_RETRY)
        raise err
    if gen.status is Status.CANCELED:
        raise EaselError(
            f"Generation {gen.id} was canceled", status=500, code="canceled", headers=dict(NO_RETRY)
        )
    if gen.status is not Status.SUCCEEDED:
        err = TimedOut(
            f"Generation {gen.id} did not finish within {timeout:g} seconds; it is still "
            f"{'queued' if gen.status is Status.QUEUED else 'running'} and can be fetched with "
            f"GET /api/v1/generations/{gen.id}"
        )
        err.headers.update(NO_RETRY)
        raise err


async def stream(
    svc: Services,
    principal: Principal,
    spec: GenerationSpec,
    inputs: Sequence[ImageInput],
    scheduling: dict[str, Any],
    kind: str,
    render_error: Callable[[EaselError], Response],
) -> StreamingResponse:
    """`stream=true`: the job is created (a refused request is an ordinary error response), then the
    answer is `text/event-stream`: `<kind>.partial_image` for each preview the job asked for
    (`partial_images`), `<kind>.completed` for each image (base64, with `usage`), or one `error` event
    (OpenAI's error object) when the job fails. `kind` is image_generation or image_edit."""
    generations = svc.generations
    spec = scheduled(spec, scheduling)
    gen = await anyio.to_thread.run_sync(partial(generations.submit, principal, spec, inputs, estimate=False))
    project, gid, timeout = principal.project_id, gen.id, svc.settings.openai_timeout_seconds
    spec = gen.spec

    def event(data: dict[str, Any]) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def common(size: str, fmt: str) -> dict[str, Any]:
        return {
            "created_at": int(time.time()),
            "size": size,
            "quality": spec.quality or "auto",
            "background": "opaque" if spec.output_format is OutputFormat.JPEG else "auto",
            "output_format": fmt,
        }

    async def partial_image(ev: JobEvent) -> str:
        data, _ = await anyio.to_thread.run_sync(preview_bytes, ev, spec.output_format)
        body: dict[str, Any] = {
            "type": f"{kind}.partial_image",
            "b64_json": base64.b64encode(data).decode("ascii"),
        }
        body |= common(f"{ev.data['width']}x{ev.data['height']}", spec.output_format.value)
        body |= {"partial_image_index": int(ev.data["index"])}
        if spec.n > 1:  # Easel: which of the job's images this is a preview of
            body["image_index"] = int(ev.data.get("image_index", 0))
        return event(body)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        told: set[tuple[int, int]] = set()
        with generations.events.subscribe(gid) as queue:
            latest = generations.events.latest_preview(gid)
            pending = [latest] if latest is not None else []
            current = await anyio.to_thread.run_sync(generations.current, project, gid)
            quiet_since = loop.time()
            while not current.status.finished and loop.time() < deadline:
                for ev in pending:
                    key = (int(ev.data["index"]), int(ev.data.get("image_index", 0)))
                    if key not in told:
                        told.add(key)
                        yield await partial_image(ev)
                # Re-read the record when the job says it ended, else once a second (a lost relay
                # message); steps are not read back.
                ended, pending = False, []
                try:
                    async with asyncio.timeout(max(0.0, min(REREAD_SECONDS, deadline - loop.time()))):
                        while not ended:
                            ev = await queue.get()
                            ended = ev.kind == "finished"
                            if ev.kind == "preview":
                                pending.append(ev)
                                break
                except TimeoutError:
                    pass
                if ended or not pending:
                    current = await anyio.to_thread.run_sync(generations.current, project, gid)
                if loop.time() - quiet_since >= HEARTBEAT_SECONDS:
                    quiet_since = loop.time()
                    yield ": keep-alive\n\n"
        try:
            check_finished(current, timeout)
        except EaselError as err:
            error = json.loads(bytes(render_error(err).body))["error"]
            yield event({"type": "error", "error": error})
            return
        images = generations.images_of(current)
        blobs = await anyio.to_thread.run_sync(lambda: [svc.library.data(img) for img in images])
        for i, data in enumerate(blobs):
            body: dict[str, Any] = {
                "type": f"{kind}.completed",
                "b64_json": base64.b64encode(data).decode("ascii"),
            }
            body |= common(f"{spec.width}x{spec.height}", spec.output_format.value)
            body["usage"] = usage(current, 1, with_input=i == 0)
            yield event(body)

    async def guarded() -> AsyncIterator[str]:
        """A fault of the server's own mid-stream ends the stream with an error event, not a cut."""
        try:
            async for chunk in events():
                yield chunk
        except Exception:
            log.exception("the stream of generation %s failed", gid)
            error = {"message": f"The stream of generation {gid} failed", "type": "server_error"}
            yield event({"type": "error", "error": error | {"param": None, "code": "server_error"}})

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


HEARTBEAT_SECONDS = 15.0  # a comment line this often while nothing happens (proxies keep the stream)
REREAD_SECONDS = 1.0  # the record is re-read this often without a `finished` event
