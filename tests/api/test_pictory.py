"""The Pictory AI Studio dialect end to end through HTTP, on SQLite and PostgreSQL (shared/seeds/003_…)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import ImageServer, curl, open_image, png_bytes, poll_url

URL = "/pictoryapis/v1/aistudio/images"
# The document's example request (cURL / Python / JavaScript / PHP / Go all send this body).
EXAMPLE = {
    "prompt": "A serene mountain landscape at sunset with a reflective lake in the foreground",
    "model": "seedream3.0",
    "aspectRatio": "16:9",
    "style": "photorealistic",
}


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The shared settings, with the local image server's host allowed for referenceImageUrl."""
    return settings.model_copy(update={"fetch_allow_hosts": ["127.0.0.1"]})


@pytest.fixture
def images() -> Iterator[ImageServer]:
    server = ImageServer(
        {"/ref.png": (png_bytes((64, 64), (20, 40, 220)), "image/png"), "/a.txt": (b"hi", "text/plain")}
    )
    yield server
    server.close()


def create(client: Any, **body: Any) -> str:
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and set(r.json()["data"]) == {"jobId"}
    job_id: str = r.json()["data"]["jobId"]
    return job_id


def job(client: Any, job_id: str) -> dict[str, Any]:
    r = client.get(f"{URL}/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def finished(client: Any, job_id: str) -> dict[str, Any]:
    body = poll_url(client, f"{URL}/{job_id}", lambda b: b["data"]["status"] != "in-progress")
    data: dict[str, Any] = body["data"]
    return data


def test_document_example_through_to_completed(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post(URL, json=EXAMPLE, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and list(body["data"]) == ["jobId"]
    job_id = body["data"]["jobId"]
    assert str(uuid.UUID(job_id)) == job_id

    data = finished(client, job_id)
    assert data["status"] == "completed" and data["jobId"] == job_id
    assert (data["model"], data["aspectRatio"], data["style"]) == ("seedream3.0", "16:9", "photorealistic")
    assert data["prompt"] == EXAMPLE["prompt"] and data["credits"] == 2 and "error" not in data
    assert data["width"] > data["height"] and data["url"] == data["images"][0]["url"]
    pic = client.get(data["url"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    assert open_image(pic.content).size == (data["width"], data["height"]) == (256, 144)

    # The same job through the native API: same image bytes, the style applied by the catalog preset.
    native = client.get(f"/api/v1/generations/{job_id}").json()["data"]
    assert native["outputImage"]["sha256"] == hashlib.sha256(pic.content).hexdigest()
    assert native["prompt"] == f"{EXAMPLE['prompt']}, photo" and native["originalPrompt"] == EXAMPLE["prompt"]
    assert native["negativePrompt"] == "cartoon" and native["guidance"] == 5.0
    assert native["credits"] == 2 and native["task"] == "text-to-image"


@pytest.mark.parametrize(
    ("model", "credits"),
    [("seedream3.0", 2), ("flux-schnell", 0.6), ("nanobanana", 4), ("nanobanana-pro", 14)],
)
def test_each_model_records_its_credits_and_defaults_to_its_first_aspect_ratio(
    api: Any, model: str, credits: float
) -> None:
    data = job(api, create(api, prompt="a red circle", model=model))
    assert data["status"] == "in-progress" and data["url"] is None and data["images"] == []
    assert (data["model"], data["credits"], data["aspectRatio"]) == (model, credits, "1:1")
    assert data["width"] == data["height"]


def test_model_defaults_to_seedream(api: Any) -> None:
    data = job(api, create(api, prompt="a red circle", aspectRatio="9:16"))
    assert (data["model"], data["aspectRatio"], data["credits"]) == ("seedream3.0", "9:16", 2)
    assert data["height"] > data["width"] and data["style"] is None and data["webhook"] is None


def test_prompt_length_bounds_are_inclusive(api: Any) -> None:
    assert job(api, create(api, prompt="abcde"))["prompt"] == "abcde"
    assert len(job(api, create(api, prompt="x" * 5000))["prompt"]) == 5000


def test_webhook_is_recorded(api: Any) -> None:
    data = job(api, create(api, prompt="a red circle", webhook="https://example.com/hooks/pictory?x=1"))
    assert data["webhook"] == "https://example.com/hooks/pictory?x=1"


def test_missing_prompt_is_the_documented_400(api: Any) -> None:
    r = api.post(URL, json={"model": "seedream3.0"})
    assert r.status_code == 400
    assert r.json() == {
        "code": "INVALID_REQUEST_BODY",
        "message": "Request body validation failed.",
        "fields": [{"field": "prompt", "message": '"prompt" is required'}],
    }


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"prompt": "abcd"}, "prompt", '"prompt" length must be at least 5 characters long'),
        ({"prompt": "    x    "}, "prompt", '"prompt" length must be at least 5 characters long'),
        (
            {"prompt": "x" * 5001},
            "prompt",
            '"prompt" length must be less than or equal to 5000 characters long',
        ),
        ({"prompt": 12345}, "prompt", '"prompt" must be a string'),
        (
            {"model": "dall-e-3"},
            "model",
            '"model" must be one of [seedream3.0, flux-schnell, nanobanana, nanobanana-pro]',
        ),
        ({"aspectRatio": "4:3"}, "aspectRatio", '"aspectRatio" must be one of [1:1, 16:9, 9:16]'),
        (
            {"model": "flux-schnell", "aspectRatio": "21:9"},
            "aspectRatio",
            '"aspectRatio" must be one of [1:1, 16:9, 9:16]',
        ),
        (
            {"style": "noir"},
            "style",
            '"style" must be one of [photorealistic, artistic, cartoon, minimalist, vintage, futuristic]',
        ),
        ({"referenceImageUrl": "not a url"}, "referenceImageUrl", '"referenceImageUrl" must be a valid uri'),
        (
            {"referenceImageUrl": "file:///etc/passwd"},
            "referenceImageUrl",
            '"referenceImageUrl" must be a valid uri',
        ),
        ({"webhook": "ftp://example.com/hook"}, "webhook", '"webhook" must be a valid uri'),
        ({"webhook": "example.com/hook"}, "webhook", '"webhook" must be a valid uri'),
        ({"negativePrompt": "blurry"}, "negativePrompt", '"negativePrompt" is not allowed'),
    ],
)
def test_invalid_fields_are_400_in_pictorys_shape(
    api: Any, body: dict[str, Any], field: str, message: str
) -> None:
    r = api.post(URL, json={"prompt": "a red circle"} | body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert (err["code"], err["message"]) == ("INVALID_REQUEST_BODY", "Request body validation failed.")
    assert {"field": field, "message": message} in err["fields"], err
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


def test_catalog_limits_are_checked_before_the_reference_is_fetched(api: Any, images: ImageServer) -> None:
    # The test catalog's nanobanana has no image-to-image task: refused without fetching.
    body = {"prompt": "a blue square", "model": "nanobanana", "referenceImageUrl": images.url("/ref.png")}
    r = api.post(URL, json=body)
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "task"
    assert images.requests == []


def test_every_invalid_field_is_listed(api: Any) -> None:
    r = api.post(URL, json={"prompt": "abc", "style": "noir", "webhook": "nope"})
    assert r.status_code == 400
    assert [f["field"] for f in r.json()["fields"]] == ["prompt", "style", "webhook"]


def test_reference_image_guides_an_image_to_image_job(client: Any, images: ImageServer) -> None:
    job_id = create(client, prompt="a blue square", referenceImageUrl=images.url("/ref.png"))
    data = finished(client, job_id)
    assert data["status"] == "completed" and data["url"]
    native = client.get(f"/api/v1/generations/{job_id}").json()["data"]
    assert native["task"] == "image-to-image" and native["strength"] == 0.75


@pytest.mark.parametrize("path", ["/a.txt", "/missing.png"])
def test_unusable_reference_image_is_a_400_naming_it(api: Any, images: ImageServer, path: str) -> None:
    r = api.post(URL, json={"prompt": "a blue square", "referenceImageUrl": images.url(path)})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "INVALID_REQUEST_BODY"
    assert [f["field"] for f in r.json()["fields"]] == ["referenceImageUrl"]
    assert r.json()["fields"][0]["message"].startswith('"referenceImageUrl" ')
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


def test_canceled_job_reads_as_failed_with_its_reason(api: Any) -> None:
    job_id = create(api, prompt="a red circle")
    assert api.post(f"/api/v1/generations/{job_id}/cancel").status_code == 200
    data = job(api, job_id)
    assert data["status"] == "failed" and data["error"]["code"] in ("CANCELED", "CANCELLED")
    assert data["url"] is None


def test_unknown_job_is_404(api: Any) -> None:
    for job_id in ("00000000-0000-0000-0000-000000000000", "nope"):
        r = api.get(f"{URL}/{job_id}")
        assert r.status_code == 404
        assert r.json() == {"code": "JOB_NOT_FOUND", "message": f"job {job_id} not found"}


def test_internal_error_is_the_documented_500(
    api: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.generations, "submit", boom)
    r = api.post(URL, json=EXAMPLE)
    assert r.status_code == 500 and r.json() == {"message": "Internal Server Error"}


def test_a_body_that_is_not_an_object_is_a_400(api: Any) -> None:
    r = api.post(URL, json=["a red circle"])
    assert r.status_code == 400
    assert r.json()["fields"] == [{"field": "body", "message": '"body" must be of type object'}]


def test_malformed_json_is_a_400(api: Any) -> None:
    r = api.post(URL, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST_BODY"


def test_missing_or_unknown_key_is_the_documented_401(runtime: Any, admin_key: str) -> None:
    from fastapi.testclient import TestClient

    from easel.app import create_app

    with TestClient(create_app(runtime=runtime, with_worker=False)) as anonymous:
        for headers in ({}, {"Authorization": "YOUR_API_KEY"}, {"Authorization": "pictai_0123456789"}):
            r = anonymous.post(URL, json=EXAMPLE, headers=headers)
            assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
            assert anonymous.get(f"{URL}/{uuid.uuid4()}", headers=headers).json() == {
                "message": "Unauthorized"
            }
        # The document's header form: the key alone as the Authorization header.
        r = anonymous.post(URL, json=EXAMPLE, headers={"Authorization": admin_key})
        assert r.status_code == 200 and r.json()["success"] is True


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_document_curl_example_over_http(live_server_no_worker: str, admin_key: str) -> None:
    status, body = curl(
        "--request", "POST",
        "--url", f"{live_server_no_worker}{URL}",
        "--header", f"Authorization: {admin_key}",
        "--header", "Content-Type: application/json",
        "--data", """{
      "prompt": "A serene mountain landscape at sunset with a reflective lake in the foreground",
      "model": "seedream3.0",
      "aspectRatio": "16:9",
      "style": "photorealistic"
    }""",
    )  # fmt: skip
    assert status == 200 and body["success"] is True and list(body["data"]) == ["jobId"]
    status, job_body = curl(
        "--url",
        f"{live_server_no_worker}{URL}/{body['data']['jobId']}",
        "--header",
        f"Authorization: {admin_key}",
    )
    assert status == 200 and job_body["data"]["status"] == "in-progress"
    assert json.dumps(job_body["data"]["aspectRatio"]) == '"16:9"'
