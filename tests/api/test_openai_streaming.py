"""OpenAI's streamed Images API (`stream=true`, `partial_images`) driven by the official `openai` SDK's
streaming calls over real HTTP, with an in-process worker making real previews of the tiny model, on
SQLite and PostgreSQL; and `usage` on non-streamed GPT-image answers."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import openai
import pytest
from test_openai import settings  # noqa: F401 - the fixture: OpenAI's model names in the catalog

from helpers import open_image, png_bytes


@pytest.fixture
def oai(live_server: str, admin_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=admin_key, max_retries=0)


def _events(stream: Any) -> list[Any]:
    with stream as events:
        return list(events)


def test_a_streamed_generation_sends_its_partial_images_then_the_image(oai, runtime) -> None:
    events = _events(
        oai.images.generate(
            model="gpt-image-1",
            prompt="a red circle on a blue background",
            size="1024x1024",
            stream=True,
            partial_images=3,
            extra_body={"steps": 8, "seed": 7},
        )
    )
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    partials, done = events[:3], events[3]
    assert [p.partial_image_index for p in partials] == [0, 1, 2]
    pictures = []
    for p in partials:
        pic = open_image(base64.b64decode(p.b64_json))
        # In the request's format, at the preview size (the request's, at most 512 px a side).
        assert pic.format == "PNG" and pic.size == (512, 512) and p.size == "512x512"
        assert p.output_format == "png" and p.quality == "auto" and p.background == "auto"
        pictures.append(pic.tobytes())
    assert len(set(pictures)) == 3  # the picture changes as the steps go on
    final = base64.b64decode(done.b64_json)
    assert open_image(final).size == (1024, 1024) and done.size == "1024x1024"
    # The completed image is the stored one, and its usage is Easel's figures (docs/api/openai.md).
    job = runtime.repo.list_generations(runtime.default_project_id, _all()).items[0]
    assert [i.sha256 for i in job.images] == [hashlib.sha256(final).hexdigest()]
    assert job.spec.previews == 3
    usage = done.usage
    assert usage.output_tokens == 32 * 32 and usage.input_tokens_details.image_tokens == 0
    assert usage.input_tokens_details.text_tokens == -(-len(b"a red circle on a blue background") // 4)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_partial_images_zero_streams_the_image_alone(oai) -> None:
    events = _events(
        oai.images.generate(model="gpt-image-1", prompt="a green tree", stream=True, partial_images=0)
    )
    assert [e.type for e in events] == ["image_generation.completed"]
    assert open_image(base64.b64decode(events[0].b64_json)).size == (1024, 1024)


def test_a_streamed_edit_sends_image_edit_events(oai) -> None:
    events = _events(
        oai.images.edit(
            image=("scene.png", png_bytes((64, 64), (200, 30, 30)), "image/png"),
            prompt="a blue circle",
            model="gpt-image-1",
            size="1024x1024",
            stream=True,
            partial_images=2,
            extra_body={"steps": 6},
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert events[2].usage.input_tokens_details.image_tokens == 32 * 32  # the source at 1024x1024


def test_a_failed_streamed_job_ends_with_an_error_event(oai) -> None:
    stream = oai.images.generate(model="broken", prompt="a red circle", size="64x64", stream=True)
    with pytest.raises(openai.APIError) as caught, stream as events:
        list(events)
    assert "model" in str(caught.value.message).lower()


def test_partial_images_need_a_stream(live_server: str, admin_key: str) -> None:
    r = httpx.post(
        f"{live_server}/v1/images/generations",
        json={"prompt": "x", "model": "gpt-image-1", "partial_images": 2},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "partial_images"


def test_gpt_image_answers_carry_usage_and_dall_e_answers_do_not(oai) -> None:
    gpt = oai.images.generate(model="gpt-image-1", prompt="a star", n=2, response_format="b64_json")
    assert gpt.usage is not None and gpt.usage.output_tokens == 2 * 32 * 32
    dalle = oai.images.generate(model="dall-e-2", prompt="a star", size="256x256")
    assert dalle.usage is None


def _all() -> Any:
    from easel.domain.generation import ListQuery

    return ListQuery((), 10, 0, False)
