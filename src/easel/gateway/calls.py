"""One call to a provider, in its API's shape (domain/providers.py): the request built from a job's spec,
the answer read back as image bytes (or URLs to download), and every failure sorted into what to do next.

- `UpstreamError.retryable`: 408, 409, 429, 5xx, timeouts, connection errors, an answer that is not what
  the API promises (bad JSON, no images): the same provider again, after a backoff.
- `UpstreamError.rejected`: the provider refused the request itself (400, 413, 422, a content-policy
  refusal): retrying or another provider would not help; the job fails with `upstream_rejected`.
- anything else (401, 403, 404: the key or the model is wrong there; a prediction that failed): this
  provider cannot serve it; the next fallback may.

Messages are sanitised before they leave: the provider's text only (no headers, no URLs with tokens),
the key replaced wherever it appears, at most 300 characters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageOps

from easel.domain.catalog import ModelEntry
from easel.domain.families import Task
from easel.domain.providers import ProviderEntry
from easel.domain.spec import GenerationSpec

MAX_MESSAGE = 300
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
REJECTED_STATUSES = frozenset({400, 413, 415, 422})
_URLISH = re.compile(r"https?://\S+")


class UpstreamError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        rejected: bool = False,
        http_status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.rejected = rejected
        self.http_status = http_status
        self.retry_after = retry_after
        self.request_id = request_id


@dataclass
class UpstreamCall:
    """What one call sends: the job's spec, for the remote entry and its provider."""

    provider: ProviderEntry
    entry: ModelEntry
    spec: GenerationSpec
    key: str | None
    headers: dict[str, str] = field(default_factory=dict)  # trace headers
    source: bytes | None = None  # PNG bytes of the source image (edits)
    mask: bytes | None = None  # PNG bytes of the mask, white where to paint (Easel's convention)

    @property
    def upstream_model(self) -> str:
        return self.entry.upstream_model or self.entry.name


@dataclass
class UpstreamResult:
    """The provider's answer: each image as bytes, or as a URL (or data URI) still to fetch."""

    images: list[bytes | str]
    request_id: str | None
    http_status: int


def read_key(provider: ProviderEntry, base_dir: str) -> str | None:
    """The provider's key, read now: its environment variable, or its file (relative to the catalog's
    folder); None when it names none. A named key that is missing raises ValueError."""
    if provider.api_key_env is not None:
        value = os.environ.get(provider.api_key_env)
        if not value:
            raise ValueError(
                f"provider {provider.name!r}: environment variable {provider.api_key_env} is not set"
            )
        return value.strip()
    if provider.api_key_file is not None:
        path = Path(base_dir) / provider.api_key_file
        try:
            return path.read_text().strip()
        except OSError as e:
            raise ValueError(
                f"provider {provider.name!r}: cannot read api_key_file {path}: {e.strerror}"
            ) from e
    return None


def sanitize(text: str, key: str | None) -> str:
    out = text if not key else text.replace(key, "***")
    out = _URLISH.sub("<url>", out)
    out = " ".join(out.split())
    return out[:MAX_MESSAGE]


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), None without one."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from easel.store.tables import utcnow

    return max(0.0, (when - utcnow()).total_seconds())


def _message_of(resp: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of an error answer, from OpenAI's `{"error": {...}}`, Replicate's `detail`, or
    the text."""
    try:
        body = resp.json()
    except ValueError:
        return None, resp.text[:1000] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            return (str(code) if code else None), str(err.get("message") or "")
        if isinstance(err, str):
            return None, err
        for k in ("detail", "message", "title"):
            if isinstance(body.get(k), str):
                return None, body[k]
    return None, resp.text[:1000]


def error_for(resp: httpx.Response, key: str | None, request_id: str | None) -> UpstreamError:
    """The UpstreamError of a non-2xx answer."""
    code, text = _message_of(resp)
    status = resp.status_code
    message = sanitize(f"{status} {text}".strip(), key)
    policy = code is not None and ("content_policy" in code or "moderation" in code or "safety" in code)
    if policy or status in REJECTED_STATUSES:
        return UpstreamError(
            "upstream_rejected", message, rejected=True, http_status=status, request_id=request_id
        )
    if status in RETRYABLE_STATUSES or status >= 500:
        return UpstreamError(
            f"upstream_{status}",
            message,
            retryable=True,
            http_status=status,
            retry_after=retry_after(resp),
            request_id=request_id,
        )
    return UpstreamError(f"upstream_{status}", message, http_status=status, request_id=request_id)


def transport_error(e: httpx.HTTPError) -> UpstreamError:
    """A timeout or a broken connection: retryable."""
    if isinstance(e, httpx.TimeoutException):
        return UpstreamError(
            "upstream_timeout", f"the provider did not answer in time ({type(e).__name__})", retryable=True
        )
    return UpstreamError(
        "upstream_unreachable", f"could not reach the provider ({type(e).__name__})", retryable=True
    )


def malformed(what: str, status: int, request_id: str | None) -> UpstreamError:
    return UpstreamError(
        "upstream_malformed",
        f"the provider's answer was not usable: {what}",
        retryable=True,
        http_status=status,
        request_id=request_id,
    )


# -- kind = "openai" ----------------------------------------------------------------------------------


def _openai_url(call: UpstreamCall, edit: bool) -> tuple[str, dict[str, str]]:
    p = call.provider
    tail = "images/edits" if edit else "images/generations"
    if p.deployment_paths:
        url = f"{p.base_url}/openai/deployments/{call.upstream_model}/{tail}"
    else:
        url = f"{p.base_url}/{tail}"
    params = {"api-version": p.api_version} if p.api_version else {}
    return url, params


def _auth(call: UpstreamCall) -> dict[str, str]:
    if not call.key:
        return {}
    if call.provider.kind == "openai" and call.provider.auth == "api-key":
        return {"api-key": call.key}
    return {"Authorization": f"Bearer {call.key}"}


def openai_fields(call: UpstreamCall) -> dict[str, Any]:
    """The request's fields: what the job asks for that the Images API has a field for."""
    s = call.spec
    fields: dict[str, Any] = {"prompt": s.prompt, "n": s.n}
    if not call.provider.deployment_paths:
        fields["model"] = call.upstream_model
    if s.width and s.height:
        fields["size"] = f"{s.width}x{s.height}"
    if s.quality:
        fields["quality"] = s.quality
    if call.provider.response_format != "omit":
        fields["response_format"] = call.provider.response_format
    return fields


def openai_mask(white: bytes) -> bytes:
    """A mask in OpenAI's convention (transparent where to paint) from Easel's (white where to paint)."""
    with Image.open(io.BytesIO(white)) as im:
        paint = im.convert("L")
    rgba = Image.new("RGBA", paint.size, (0, 0, 0, 255))
    rgba.putalpha(ImageOps.invert(paint))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    return out.getvalue()


async def call_openai(client: httpx.AsyncClient, call: UpstreamCall) -> UpstreamResult:
    edit = call.spec.task is not Task.TEXT_TO_IMAGE
    url, params = _openai_url(call, edit)
    headers = call.provider.headers | call.headers | _auth(call)
    fields = openai_fields(call)
    if edit:
        if call.source is None:
            raise UpstreamError("upstream_rejected", "an edit needs its source image", rejected=True)
        files: dict[str, Any] = {"image": ("image.png", call.source, "image/png")}
        if call.mask is not None:
            files["mask"] = ("mask.png", openai_mask(call.mask), "image/png")
        data = {k: str(v) for k, v in fields.items()}
        resp = await client.post(url, params=params, headers=headers, data=data, files=files)
    else:
        resp = await client.post(url, params=params, headers=headers, json=fields)
    request_id = resp.headers.get("x-request-id") or resp.headers.get("apim-request-id")
    if resp.status_code >= 300:
        raise error_for(resp, call.key, request_id)
    try:
        body = resp.json()
        items = body["data"]
        images: list[bytes | str] = []
        for item in items:
            if item.get("b64_json"):
                images.append(base64.b64decode(item["b64_json"], validate=True))
            elif item.get("url"):
                images.append(str(item["url"]))
            else:
                raise ValueError("an item with neither b64_json nor url")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise malformed(type(e).__name__, resp.status_code, request_id) from e
    if not images:
        raise malformed("no images", resp.status_code, request_id)
    return UpstreamResult(images[: call.spec.n], request_id, resp.status_code)


# -- kind = "replicate" -------------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def replicate_input(call: UpstreamCall) -> dict[str, Any]:
    """The prediction's `input`: the names most of Replicate's image models take."""
    s = call.spec
    out: dict[str, Any] = {"prompt": s.prompt, "num_outputs": s.n, "output_format": s.output_format.value}
    if s.width and s.height:
        out |= {"width": s.width, "height": s.height}
    if s.seed is not None:
        out["seed"] = s.seed
    if s.steps:
        out["num_inference_steps"] = s.steps
    if s.guidance is not None:
        out["guidance_scale"] = s.guidance
    if s.negative_prompt:
        out["negative_prompt"] = s.negative_prompt
    if call.source is not None:
        out["image"] = _data_uri(call.source)
        if s.strength is not None:
            out["prompt_strength"] = s.strength
    if call.mask is not None:
        out["mask"] = _data_uri(call.mask)
    return out


async def call_replicate(client: httpx.AsyncClient, call: UpstreamCall) -> UpstreamResult:
    """Create a prediction, poll it until it ends; a cancel of the task cancels the prediction."""
    p = call.provider
    headers = p.headers | call.headers | _auth(call)
    model = call.upstream_model
    body: dict[str, Any] = {"input": replicate_input(call)}
    if ":" in model:  # owner/name:version
        url = f"{p.base_url}/v1/predictions"
        body["version"] = model.split(":", 1)[1]
    else:
        url = f"{p.base_url}/v1/models/{model}/predictions"
    resp = await client.post(url, headers=headers, json=body)
    request_id: str | None = None
    if resp.status_code >= 300:
        raise error_for(resp, call.key, None)
    prediction = _prediction(resp, None)
    request_id = str(prediction.get("id") or "") or None
    found = prediction.get("urls")
    links: dict[str, Any] = found if isinstance(found, dict) else {}
    get_url = str(links.get("get") or f"{p.base_url}/v1/predictions/{request_id}")
    cancel_url = str(links.get("cancel") or f"{p.base_url}/v1/predictions/{request_id}/cancel")
    try:
        while prediction.get("status") not in ("succeeded", "failed", "canceled"):
            await asyncio.sleep(p.poll_seconds)
            resp = await client.get(get_url, headers=headers)
            if resp.status_code >= 300:
                raise error_for(resp, call.key, request_id)
            prediction = _prediction(resp, request_id)
    except asyncio.CancelledError:
        # Our job was canceled: tell the provider, without waiting long (the task is ending).
        await asyncio.shield(_cancel(client, cancel_url, headers))
        raise
    status = prediction.get("status")
    if status != "succeeded":
        text = sanitize(str(prediction.get("error") or status), call.key)
        policy = any(w in text.lower() for w in ("nsfw", "safety", "content policy"))
        code = "upstream_rejected" if policy else "upstream_prediction_failed"
        raise UpstreamError(code, text, rejected=policy, http_status=resp.status_code, request_id=request_id)
    output = prediction.get("output")
    items = output if isinstance(output, list) else [output]
    images: list[bytes | str] = [str(u) for u in items if isinstance(u, str) and u]
    if not images:
        raise malformed("no output", resp.status_code, request_id)
    return UpstreamResult(images[: call.spec.n], request_id, resp.status_code)


def _prediction(resp: httpx.Response, request_id: str | None) -> dict[str, Any]:
    try:
        body = resp.json()
    except (ValueError, json.JSONDecodeError) as e:
        raise malformed("not JSON", resp.status_code, request_id) from e
    if not isinstance(body, dict) or "status" not in body:
        raise malformed("not a prediction", resp.status_code, request_id)
    return body


async def _cancel(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # best effort: the prediction ends on its own
        await client.post(url, headers=headers, timeout=5.0)


async def call_provider(client: httpx.AsyncClient, call: UpstreamCall) -> UpstreamResult:
    """One call in the provider's shape; UpstreamError for every failure."""
    try:
        if call.provider.kind == "replicate":
            return await call_replicate(client, call)
        return await call_openai(client, call)
    except httpx.HTTPError as e:
        raise transport_error(e) from e
