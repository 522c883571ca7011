"""The Wix social-publisher dialect end to end through HTTP, on SQLite and PostgreSQL (shared/seeds/000_…)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from helpers import ImageServer, curl, open_image, png_bytes, poll_url

CREATE = "/social-publisher/v1/generate-image"
POLL = "/social-publisher/v1/generated-image"
FOLDER = "Social Marketing AI Media"
SOURCE_PATH = "/media/cf2434_source-product-photo.jpg"


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (240, 200, 40)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The shared settings, with the local image server's host allowed for imageUrl."""
    return settings.model_copy(update={"fetch_allow_hosts": ["127.0.0.1"]})


@pytest.fixture
def images() -> Iterator[ImageServer]:
    server = ImageServer(
        {
            SOURCE_PATH: (jpeg_bytes(), "image/jpeg"),
            "/square.png": (png_bytes((64, 64)), "image/png"),
            "/notes.txt": (b"not an image", "text/plain"),
        }
    )
    yield server
    server.close()


def example(images: ImageServer) -> dict[str, str]:
    """The document's example request, the image host replaced by the local server."""
    return {
        "userInput": "Add a bright summer-sale banner to the product photo",
        "imageUrl": images.url(SOURCE_PATH),
    }


def start(client: Any, body: dict[str, Any]) -> str:
    r = client.post(CREATE, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "OK"
    execution_id: str = r.json()["executionId"]
    return execution_id


def test_document_example_polled_to_ready(client: Any, images: ImageServer) -> None:
    r = client.post(CREATE, json=example(images), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "executionId"} and body["status"] == "OK"
    execution_id = body["executionId"]
    assert str(uuid.UUID(execution_id)) == execution_id and len(execution_id) <= 1000

    done = poll_url(client, f"{POLL}/{execution_id}", lambda b: b["status"] != "IN_PROGRESS")
    assert done["status"] == "READY" and done["executionId"] == execution_id
    assert set(done) == {"executionId", "status", "imageUrl", "fileId"}
    pic = client.get(done["imageUrl"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    open_image(pic.content)

    # Filed in the media folder, and the same job through the native API with the same bytes.
    native = client.get(f"/api/v1/generations/{execution_id}").json()["data"]
    assert native["task"] == "image-to-image" and native["folder"] == FOLDER
    # In the source photo's shape: 96x64 is 3:2.
    assert native["aspectRatio"] == "3:2" and open_image(pic.content).size == (
        native["width"],
        native["height"],
    )
    assert native["originalPrompt"] == example(images)["userInput"]
    assert native["outputImageId"] == done["fileId"]
    assert native["outputImage"]["sha256"] == hashlib.sha256(pic.content).hexdigest()
    file = client.get(f"/api/v1/images/{done['fileId']}").json()["data"]
    assert file["folder"] == FOLDER and file["generationId"] == execution_id


def test_in_progress_has_no_image_fields(api: Any, images: ImageServer) -> None:
    execution_id = start(api, {"userInput": "a red circle", "imageUrl": images.url("/square.png")})
    r = api.get(f"{POLL}/{execution_id}")
    assert r.status_code == 200
    assert r.json() == {"executionId": execution_id, "status": "IN_PROGRESS"}


def test_canceled_generation_is_failed_with_a_reason(api: Any, images: ImageServer) -> None:
    execution_id = start(api, {"userInput": "a red circle", "imageUrl": images.url("/square.png")})
    api.post(f"/api/v1/generations/{execution_id}/cancel")
    body = api.get(f"{POLL}/{execution_id}").json()
    assert body["status"] == "FAILED" and body["failureReason"]
    assert "imageUrl" not in body and "fileId" not in body


def violations(r: Any) -> list[str]:
    body = r.json()
    assert r.status_code == 400, body
    assert set(body) == {"message", "details"} and body["message"]
    return [v["field"] for v in body["details"]["validationError"]["fieldViolations"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userInput": "x" * 3001}, "userInput"),
        ({"userInput": "   "}, "userInput"),
        ({"userInput": None}, "userInput"),
        ({"imageUrl": "not a url"}, "imageUrl"),
        ({"imageUrl": "/media/photo.jpg"}, "imageUrl"),
        ({"imageUrl": "ftp://example.com/photo.jpg"}, "imageUrl"),
        ({"imageUrl": "data:image/png;base64,iVBORw0KGgo="}, "imageUrl"),
        ({"imageUrl": "http://10.0.0.1/photo.jpg"}, "imageUrl"),
        ({"options": {"imageUrl": "https://example.com/a.jpg"}}, "options"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(
    api: Any, images: ImageServer, body: dict[str, Any], field: str
) -> None:
    r = api.post(CREATE, json={"userInput": "a red circle", "imageUrl": images.url("/square.png")} | body)
    assert field in violations(r)
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


@pytest.mark.parametrize("missing", ["userInput", "imageUrl"])
def test_required_parameters(api: Any, images: ImageServer, missing: str) -> None:
    body = {"userInput": "a red circle", "imageUrl": images.url("/square.png")}
    del body[missing]
    assert violations(api.post(CREATE, json=body)) == [missing]


@pytest.mark.parametrize("path", ["/notes.txt", "/gone.jpg"])
def test_unusable_source_image_is_a_400_naming_image_url(api: Any, images: ImageServer, path: str) -> None:
    r = api.post(CREATE, json={"userInput": "a red circle", "imageUrl": images.url(path)})
    assert violations(r) == ["imageUrl"]


def test_model_limits_name_user_input(api: Any, images: ImageServer) -> None:
    # The test catalog's default model takes at most 200 characters: the error names the Wix field.
    r = api.post(CREATE, json={"userInput": "x" * 201, "imageUrl": images.url("/square.png")})
    assert violations(r) == ["userInput"]
    assert images.requests == []  # refused before the source image was fetched


def test_every_violation_is_listed(api: Any) -> None:
    r = api.post(CREATE, json={"userInput": "x" * 3001, "imageUrl": "nope"})
    assert violations(r) == ["userInput", "imageUrl"]


def test_unknown_execution_is_404_application_error(api: Any) -> None:
    r = api.get(f"{POLL}/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    err = r.json()["details"]["applicationError"]
    assert err["code"] == "EXECUTION_NOT_FOUND" and "not found" in err["description"]
    assert r.json()["message"] == err["description"]


@pytest.mark.parametrize(
    ("size", "allowed", "expected"),
    [
        ((96, 64), ["1:1", "3:2", "16:9"], "3:2"),
        ((1920, 1080), ["1:1", "3:2", "16:9"], "16:9"),
        ((1000, 3000), ["1:1", "3:2", "16:9", "9:16"], "9:16"),
        ((1000, 3000), ["1:1", "16:9"], "1:1"),
        ((500, 500), ["16:9", "1:1"], "1:1"),
    ],
)
def test_closest_aspect_ratio(size: tuple[int, int], allowed: list[str], expected: str) -> None:
    from easel.domain.sizes import closest_aspect_ratio

    assert closest_aspect_ratio(*size, allowed) == expected


def test_missing_or_unknown_key_is_401(runtime: Any, admin_key: str, images: ImageServer) -> None:
    from fastapi.testclient import TestClient

    from easel.app import create_app

    with TestClient(create_app(runtime=runtime, with_worker=False)) as anonymous:
        for headers in ({}, {"Authorization": "<AUTH>"}):
            r = anonymous.post(CREATE, json=example(images), headers=headers)
            assert r.status_code == 401
            assert r.json()["details"]["applicationError"]["code"] == "UNAUTHORIZED"
        # The document's header form: the key alone as the Authorization header.
        r = anonymous.post(CREATE, json=example(images), headers={"Authorization": admin_key})
        assert r.status_code == 200 and r.json()["status"] == "OK"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_document_curl_example_over_http(
    live_server_no_worker: str, admin_key: str, images: ImageServer
) -> None:
    status, body = curl(
        "-X", "POST",
        f"{live_server_no_worker}{CREATE}",
        "-H", f"Authorization: {admin_key}",
        "-H", "Content-Type: application/json",
        "-d", f"""{{
  "userInput": "Add a bright summer-sale banner to the product photo",
  "imageUrl": "{images.url(SOURCE_PATH)}"
}}""",
    )  # fmt: skip
    assert status == 200 and body["status"] == "OK" and set(body) == {"status", "executionId"}
    status, polled = curl(
        f"{live_server_no_worker}{POLL}/{body['executionId']}", "-H", f"Authorization: {admin_key}"
    )
    assert status == 200 and json.dumps(polled, sort_keys=True) == json.dumps(
        {"executionId": body["executionId"], "status": "IN_PROGRESS"}, sort_keys=True
    )


def test_internal_error_is_a_500_application_error(
    api: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.generations, "get", boom)
    r = api.get(f"{POLL}/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 500
    assert r.json()["details"]["applicationError"]["code"] == "INTERNAL_ERROR" and "boom" not in r.text
