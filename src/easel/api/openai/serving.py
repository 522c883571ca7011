"""OpenAI's answers are synchronous: submit the job, wait for it (up to EASEL_OPENAI_TIMEOUT_SECONDS) and
answer with its images, or with an error that tells OpenAI's SDKs not to retry (a retry would create a
second job)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio
from fastapi import Request

from easel.api.deps import image_url
from easel.api.openai.protocol import ResponseFormat, images_response
from easel.api.scheduling import scheduled
from easel.domain.errors import EaselError, TimedOut
from easel.domain.failures import GENERATION_FAILED, client_message
from easel.domain.generation import Status
from easel.domain.inputs import ImageInput
from easel.domain.keys import Principal
from easel.domain.scheduling import DEADLINE_EXCEEDED
from easel.domain.spec import GenerationSpec
from easel.service.container import Services

NO_RETRY = {"x-should-retry": "false"}


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
    images = generations.images_of(gen)
    if fmt is ResponseFormat.URL:
        values = [image_url(request, svc.links, img) for img in images]
    else:
        blobs = await anyio.to_thread.run_sync(lambda: [svc.library.data(img) for img in images])
        values = [base64.b64encode(b).decode("ascii") for b in blobs]
    return images_response(gen, fmt, values)
