"""The Placewise ML dialect end to end through HTTP, on SQLite and PostgreSQL (shared/seeds/002_…)."""

from __future__ import annotations

import hashlib
import shutil
from typing import Any

import pytest

from helpers import curl, open_image, poll_url

CREATE = "/v1/ml/general/generate_image"
TASKS = "/v1/ml/general/image_generation_tasks"
CLUB = {"X-Loyalty-Club-Slug": "cheesecake-club"}
# The document's example form, field by field (curl --form).
EXAMPLE = {
    "prompt": "Minimalistic cheesecake cartoon image",
    "model_type": "small",
    "aspect_ratio": "1:1",
    "image_size": "thumbnail",
    "creativity": "2",
    "photorealistic": "false",
    "random_seed": "1",
}


def multipart(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Form fields as multipart/form-data parts (what curl --form sends)."""
    return {k: (None, v) for k, v in fields.items()}


def create(client: Any, headers: dict[str, str] | None = None, **fields: Any) -> int:
    r = client.post(CREATE, json={"prompt": "a red circle"} | fields, headers=CLUB | (headers or {}))
    assert r.status_code == 200, r.text
    task_id: int = r.json()["image_generation_task"]["id"]
    return task_id


def task(client: Any, task_id: int) -> dict[str, Any]:
    r = client.get(f"{TASKS}/{task_id}", headers=CLUB)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["image_generation_task"]
    return body


def completed(client: Any, task_id: int) -> dict[str, Any]:
    body = poll_url(
        client,
        f"{TASKS}/{task_id}",
        lambda b: b["image_generation_task"]["status"] not in ("pending", "processing"),
        headers=CLUB,
    )
    done: dict[str, Any] = body["image_generation_task"]
    return done


def native_generation(client: Any, index: int = 0) -> dict[str, Any]:
    """The newest-but-`index` generation through the native API."""
    data: dict[str, Any] = client.get("/api/v1/generations").json()["data"][index]
    return data


def test_document_example_form_through_to_completed(client: Any) -> None:
    # The curl example: its empty X-* headers as sent, the club slug filled in, the form as multipart.
    headers = {"X-User-Agent": "", "X-Product-Name": "", "X-Customer": ""} | CLUB
    r = client.post(CREATE, files=multipart(EXAMPLE), headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["image_generation_task"] and list(body["image_generation_task"]) == ["id"]
    task_id = body["image_generation_task"]["id"]
    assert isinstance(task_id, int) and task_id >= 1

    done = completed(client, task_id)
    assert done["id"] == task_id and done["status"] == "completed" and done["error"] is None
    assert done["prompt"] == EXAMPLE["prompt"]
    assert (done["model_type"], done["aspect_ratio"], done["image_size"]) == ("small", "1:1", "thumbnail")
    assert (done["creativity"], done["photorealistic"], done["random_seed"]) == (2, False, 1)
    assert (done["width"], done["height"], done["credits"]) == (256, 256, 1)
    assert done["image_urls"] == [done["image_url"]] and done["finished_at"]
    pic = client.get(done["image_url"])
    assert pic.status_code == 200 and open_image(pic.content).size == (256, 256)

    # The same job through the native API, with the same bytes; the club is recorded in meta.
    native = native_generation(client)
    assert native["outputImage"]["sha256"] == hashlib.sha256(pic.content).hexdigest()
    assert native["model"] == "placewise-small" and native["seed"] == 1
    assert native["meta"]["loyaltyClubSlug"] == "cheesecake-club"

    # random_seed: the same request again draws the same picture.
    again = completed(
        client,
        client.post(CREATE, files=multipart(EXAMPLE), headers=CLUB).json()["image_generation_task"]["id"],
    )
    assert again["id"] != task_id
    assert client.get(again["image_url"]).content == pic.content


@pytest.mark.parametrize("encoding", ["json", "urlencoded", "multipart"])
def test_every_body_encoding_is_read_alike(api: Any, encoding: str) -> None:
    fields = {"prompt": "a cheesecake", "model_type": "medium", "aspect_ratio": "16:9", "image_size": "small"}
    fields |= {"creativity": "4", "photorealistic": "true", "random_seed": "42"}
    if encoding == "json":
        typed = fields | {"creativity": 4, "photorealistic": True, "random_seed": 42}
        r = api.post(CREATE, json=typed, headers=CLUB)
    elif encoding == "urlencoded":
        r = api.post(CREATE, data=fields, headers=CLUB)
    else:
        r = api.post(CREATE, files=multipart(fields), headers=CLUB)
    assert r.status_code == 200, r.text
    t = task(api, r.json()["image_generation_task"]["id"])
    assert t["status"] == "pending" and t["image_url"] is None and t["image_urls"] == []
    assert (t["model_type"], t["aspect_ratio"], t["image_size"]) == ("medium", "16:9", "small")
    assert (t["creativity"], t["photorealistic"], t["random_seed"]) == (4, True, 42)
    assert (t["width"], t["height"]) == (512, 288)


def test_defaults_follow_the_document(api: Any) -> None:
    t = task(api, create(api))
    assert (t["model_type"], t["aspect_ratio"], t["image_size"]) == ("small", "1:1", "thumbnail")
    assert (t["creativity"], t["photorealistic"]) == (2, False) and isinstance(t["random_seed"], int)


def test_empty_optional_form_fields_mean_not_given(api: Any) -> None:
    fields = {"prompt": "a cheesecake", "random_seed": "", "model_type": "medium", "creativity": ""}
    r = api.post(CREATE, files=multipart(fields), headers=CLUB)
    assert r.status_code == 200, r.text
    t = task(api, r.json()["image_generation_task"]["id"])
    assert t["model_type"] == "medium" and t["creativity"] == 2 and isinstance(t["random_seed"], int)


@pytest.mark.parametrize(("creativity", "guidance"), [(0, 6.0), (2, 4.0), (4, 2.0), (5, 1.0)])
def test_creativity_sets_guidance_on_medium_and_large(api: Any, creativity: int, guidance: float) -> None:
    for model_type in ("medium", "large"):
        create(api, model_type=model_type, creativity=creativity)
        assert native_generation(api)["guidance"] == guidance


def test_creativity_and_photorealistic_are_ignored_where_the_document_says_so(api: Any) -> None:
    create(api, model_type="small", creativity=5, photorealistic=True)
    small = native_generation(api)
    assert small["guidance"] == 4.0 and small["style"] is None and small["prompt"] == "a red circle"
    assert small["meta"]["placewise"] == {"image_size": "thumbnail", "creativity": 5, "photorealistic": True}
    create(api, model_type="medium", photorealistic=True)
    assert native_generation(api)["style"] is None


def test_photorealistic_uses_the_catalog_style_on_large(api: Any) -> None:
    create(api, model_type="large", photorealistic="true", image_size="large", aspect_ratio="9:16")
    large = native_generation(api)
    assert large["style"] == "photorealistic" and large["prompt"] == "a red circle, photo"
    assert large["negativePrompt"] == "cartoon" and large["model"] == "placewise-large"
    assert (large["width"], large["height"], large["credits"]) == (808, 1440, 4)


@pytest.mark.parametrize("size", ["thumbnail", "medium"])
def test_small_model_allows_thumbnail_and_medium(api: Any, size: str) -> None:
    assert task(api, create(api, model_type="small", image_size=size))["image_size"] == size


def error_fields(r: Any) -> list[str]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["message"]
    return [f["field"] for f in err["fields"]]


@pytest.mark.parametrize("size", ["small", "large"])
def test_small_model_warning_rule_is_a_400_naming_image_size(api: Any, size: str) -> None:
    r = api.post(CREATE, files=multipart(EXAMPLE | {"image_size": size}), headers=CLUB)
    assert error_fields(r) == ["image_size"]
    assert "thumbnail or medium" in r.json()["error"]["fields"][0]["message"]
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"model_type": "xl"}, "model_type"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"image_size": "huge"}, "image_size"),
        ({"creativity": "abc"}, "creativity"),
        ({"creativity": "6"}, "creativity"),
        ({"creativity": "-1"}, "creativity"),
        ({"photorealistic": "maybe"}, "photorealistic"),
        ({"random_seed": "seven"}, "random_seed"),
        ({"random_seed": "-1"}, "random_seed"),
        ({"random_seed": str(2**32)}, "random_seed"),
        ({"n": "2"}, "n"),
    ],
)
def test_invalid_form_fields_are_400_naming_them(api: Any, fields: dict[str, str], field: str) -> None:
    r = api.post(CREATE, files=multipart(EXAMPLE | fields), headers=CLUB)
    assert field in error_fields(r)
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


def test_missing_prompt_and_file_parts(api: Any) -> None:
    no_prompt = {k: v for k, v in EXAMPLE.items() if k != "prompt"}
    assert error_fields(api.post(CREATE, files=multipart(no_prompt), headers=CLUB)) == ["prompt"]
    with_file = multipart(no_prompt) | {"prompt": ("p.txt", b"a file", "text/plain")}
    twice = [("prompt", (None, "a")), ("prompt", (None, "b"))]
    assert error_fields(api.post(CREATE, files=twice, headers=CLUB)) == ["prompt"]
    assert error_fields(api.post(CREATE, files=with_file, headers=CLUB)) == ["prompt"]
    assert error_fields(
        api.post(CREATE, content=b"[1]", headers=CLUB | {"Content-Type": "application/json"})
    ) == ["body"]
    r = api.post(CREATE, content=b"prompt", headers=CLUB | {"Content-Type": "text/plain"})
    assert error_fields(r) == ["Content-Type"]


@pytest.mark.parametrize("slug", [None, "", "  "])
def test_loyalty_club_slug_is_required(api: Any, slug: str | None) -> None:
    headers = {} if slug is None else {"X-Loyalty-Club-Slug": slug}
    r = api.post(CREATE, files=multipart(EXAMPLE), headers=headers)
    assert error_fields(r) == ["X-Loyalty-Club-Slug"]
    task_id = create(api)
    assert error_fields(api.get(f"{TASKS}/{task_id}", headers=headers)) == ["X-Loyalty-Club-Slug"]


def test_tasks_are_numbered_and_read_only_by_their_club(api: Any) -> None:
    first, second = create(api), create(api)
    assert second > first
    other = api.get(f"{TASKS}/{first}", headers={"X-Loyalty-Club-Slug": "another-club"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "task_not_found"
    for missing in (str(second + 1000), "abc", "-1"):
        r = api.get(f"{TASKS}/{missing}", headers=CLUB)
        assert r.status_code == 404, missing
        assert r.json() == {
            "error": {"code": "task_not_found", "message": f"task {missing} not found", "fields": []}
        }


def test_canceled_task(api: Any) -> None:
    task_id = create(api)
    api.post(f"/api/v1/generations/{native_generation(api)['id']}/cancel")
    t = task(api, task_id)
    assert t["status"] == "canceled" and t["error"]["code"] and t["image_url"] is None


def test_missing_or_unknown_key_is_401(runtime: Any, admin_key: str) -> None:
    from fastapi.testclient import TestClient

    from easel.app import create_app

    with TestClient(create_app(runtime=runtime, with_worker=False)) as anonymous:
        for headers in (
            {},
            {"X-Client-Authorization": "{{API_TOKEN}}"},
            {"Authorization": f"Bearer {admin_key}"},
        ):
            r = anonymous.post(CREATE, files=multipart(EXAMPLE), headers=CLUB | headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = anonymous.post(
            CREATE, files=multipart(EXAMPLE), headers=CLUB | {"X-Client-Authorization": admin_key}
        )
        assert r.status_code == 200
        task_id = r.json()["image_generation_task"]["id"]
        assert anonymous.get(f"{TASKS}/{task_id}", headers=CLUB).status_code == 401
        r = anonymous.get(f"{TASKS}/{task_id}", headers=CLUB | {"X-Client-Authorization": admin_key})
        assert r.status_code == 200 and r.json()["image_generation_task"]["status"] == "pending"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_document_curl_example_over_http(live_server_no_worker: str, admin_key: str) -> None:
    status, body = curl(
        "--location", "--request", "POST", f"{live_server_no_worker}{CREATE}",
        "--header", "X-User-Agent;",
        "--header", "X-Product-Name;",
        "--header", "X-Loyalty-Club-Slug: cheesecake-club",
        "--header", "X-Customer;",
        "--header", "Authorization;",
        "--header", f"X-Client-Authorization: {admin_key}",
        "--form", 'prompt="Minimalistic cheesecake cartoon image"',
        "--form", 'model_type="small"',
        "--form", 'aspect_ratio="1:1"',
        "--form", 'image_size="thumbnail"',
        "--form", 'creativity="2"',
        "--form", 'photorealistic="false"',
        "--form", 'random_seed="1"',
    )  # fmt: skip
    assert status == 200 and list(body) == ["image_generation_task"]
    task_id = body["image_generation_task"]["id"]
    assert isinstance(task_id, int)
    status, read = curl(
        f"{live_server_no_worker}{TASKS}/{task_id}",
        "--header", "X-Loyalty-Club-Slug: cheesecake-club",
        "--header", f"X-Client-Authorization: {admin_key}",
    )  # fmt: skip
    assert status == 200
    t = read["image_generation_task"]
    assert (t["prompt"], t["random_seed"], t["photorealistic"]) == (
        "Minimalistic cheesecake cartoon image",
        1,
        False,
    )


def test_openapi_documents_every_body_encoding(api: Any) -> None:
    body = api.get("/openapi.json").json()["paths"][CREATE]["post"]["requestBody"]
    assert set(body["content"]) == {
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/json",
    }
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["prompt"] and "random_seed" in schema["properties"]


def test_internal_error_is_a_500(api: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.generations, "generation_by_number", boom)
    r = api.get(f"{TASKS}/1", headers=CLUB)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error" and "boom" not in r.text
