"""One call's shape and its failures (gateway/calls.py), against an in-process transport that records what
was sent: the Azure form of the OpenAI API (deployment path, api-version, api-key header, no model in
the body), the edit's multipart, Replicate's version form, and how each answer is sorted (retry, refuse,
move on), with the key never in a message."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from easel.domain.catalog import ModelEntry
from easel.domain.families import Task
from easel.domain.providers import ProviderEntry
from easel.domain.spec import GenerationSpec
from easel.gateway.calls import UpstreamCall, UpstreamError, call_provider, error_for, sanitize

KEY = "sk-live-abcdef0123456789"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def run(provider: ProviderEntry, spec: GenerationSpec, handler: Any, **kw: Any) -> Any:
    entry = ModelEntry(name="remote", backend="upstream", provider=provider.name, upstream_model="dall-e-3")
    call = UpstreamCall(provider, entry, spec, KEY, headers={"traceparent": "00-t-s-01"}, **kw)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await call_provider(client, call)

    return asyncio.run(go())


def test_the_azure_form_of_the_openai_api() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"data": [{"b64_json": base64.b64encode(png()).decode()}]}
        return httpx.Response(200, json=body, headers={"apim-request-id": "az-1"})

    azure = ProviderEntry(
        name="az",
        kind="openai",
        base_url="https://x.openai.azure.com",
        auth="api-key",
        api_version="2024-10-21",
        deployment_paths=True,
    )
    result = run(azure, GenerationSpec(prompt="p", width=1024, height=1024, quality="hd"), handler)
    [request] = seen
    assert request.url.path == "/openai/deployments/dall-e-3/images/generations"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    body = json.loads(request.content)
    assert body == {
        "prompt": "p",
        "n": 1,
        "size": "1024x1024",
        "quality": "hd",
        "response_format": "b64_json",
    }
    assert result.request_id == "az-1" and result.images == [png()]


def test_an_edit_is_multipart_with_its_source_and_mask() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"url": "https://cdn.example/1.png"}]})

    openai = ProviderEntry(
        name="o", kind="openai", base_url="https://api.openai.com/v1", response_format="omit"
    )
    spec = GenerationSpec(prompt="p", task=Task.INPAINT, width=64, height=64)
    white = Image.new("L", (8, 8), 0)
    white.paste(255, (0, 0, 4, 8))  # Easel's convention: paint the left half
    buf = io.BytesIO()
    white.save(buf, "PNG")
    result = run(openai, spec, handler, source=b"SOURCE", mask=buf.getvalue())
    [request] = seen
    assert request.url.path == "/v1/images/edits"
    content = request.content
    assert b'name="image"' in content and b"SOURCE" in content and b'name="mask"' in content
    sent = content[content.index(b'name="mask"') :]
    sent = sent[sent.index(b"\x89PNG") :]
    with Image.open(io.BytesIO(sent)) as mask:  # OpenAI's convention: transparent where to paint
        assert mask.mode == "RGBA"
        assert mask.getpixel((1, 4))[3] == 0 and mask.getpixel((6, 4))[3] == 255
    assert b'name="model"' in content and b"dall-e-3" in content and b"response_format" not in content
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert result.images == ["https://cdn.example/1.png"]  # a URL, fetched later under the fetcher's rules


def test_replicate_with_a_version_posts_to_predictions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        done = {"id": "x1", "status": "succeeded", "output": "data:image/png;base64,AAAA"}
        return httpx.Response(201, json=done)

    replicate = ProviderEntry(name="r", kind="replicate", base_url="https://api.replicate.com")
    entry_spec = GenerationSpec(prompt="p", width=64, height=64, seed=5, steps=4, guidance=3.5, n=1)
    provider_entry = ModelEntry(
        name="remote", backend="upstream", provider="r", upstream_model="owner/name:abc123"
    )
    call = UpstreamCall(replicate, provider_entry, entry_spec, KEY)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await call_provider(client, call)

    result = asyncio.run(go())
    [request] = seen
    assert request.url.path == "/v1/predictions"
    body = json.loads(request.content)
    assert body["version"] == "abc123"
    assert body["input"] | {} == {
        "prompt": "p",
        "num_outputs": 1,
        "output_format": "png",
        "width": 64,
        "height": 64,
        "seed": 5,
        "num_inference_steps": 4,
        "guidance_scale": 3.5,
    }
    assert result.request_id == "x1" and result.images == ["data:image/png;base64,AAAA"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "retryable", "rejected", "code"),
    [
        (429, {"error": {"message": "slow"}}, {"Retry-After": "7"}, True, False, "upstream_429"),
        (503, "overloaded", {}, True, False, "upstream_503"),
        (
            400,
            {"error": {"code": "content_policy_violation", "message": "no"}},
            {},
            False,
            True,
            "upstream_rejected",
        ),
        (422, {"detail": "bad input"}, {}, False, True, "upstream_rejected"),
        (401, {"error": {"message": "bad key"}}, {}, False, False, "upstream_401"),
        (404, {"error": {"message": "no such model"}}, {}, False, False, "upstream_404"),
    ],
)
def test_each_answer_is_sorted(
    status: int, body: Any, headers: dict[str, str], retryable: bool, rejected: bool, code: str
) -> None:
    content = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    error = error_for(httpx.Response(status, content=content, headers=headers), KEY, "rid")
    assert (error.retryable, error.rejected, error.code) == (retryable, rejected, code)
    assert error.retry_after == (7.0 if status == 429 else None)


def test_a_transport_failure_is_retryable_and_a_message_never_carries_the_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    provider = ProviderEntry(name="o", kind="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamError) as info:
        run(provider, GenerationSpec(prompt="p"), refuse)
    assert info.value.retryable and info.value.code == "upstream_unreachable"
    echoed = f"Invalid key {KEY}, see https://platform.example/keys?token=abc"
    clean = sanitize(echoed, KEY)
    assert KEY not in clean and "token=abc" not in clean and clean.startswith("Invalid key ***")
