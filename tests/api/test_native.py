"""The native API end to end through HTTP (in-process worker), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from helpers import open_image, png_bytes, poll


def create(client, **body):  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/generations", json={"prompt": "a red circle"} | body)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def test_create_poll_download(client) -> None:
    data = create(client, size="64x96", seed=7)
    assert data["status"] in ("pending", "processing", "success")
    assert data["projectId"] and data["originalPrompt"] == "a red circle"
    done = poll(client, data["id"])
    assert done["status"] == "success"
    assert done["retryCount"] == 0 and done["processingTimeMs"] >= 0 and done["errorMessage"] is None
    img = done["outputImage"]
    assert img["id"] == done["outputImageId"] == done["outputImageIds"][0]
    assert (img["width"], img["height"], img["mimeType"], img["seed"]) == (64, 96, "image/png", 7)
    r = client.get(img["storageUrl"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert len(r.content) == img["fileSize"]
    pic = open_image(r.content)
    assert pic.format == "PNG" and pic.size == (64, 96)


def test_same_seed_same_bytes_different_seed_differs(client) -> None:
    def image_of(seed: int) -> bytes:
        done = poll(client, create(client, size="64x64", seed=seed)["id"])
        return client.get(done["outputImage"]["storageUrl"]).content

    a, b, c = image_of(11), image_of(11), image_of(12)
    assert a == b
    assert a != c


def test_n_images_each_with_its_seed(client) -> None:
    done = poll(client, create(client, size="64x64", seed=100, n=3)["id"])
    assert [i["seed"] for i in done["outputImages"]] == [100, 101, 102]
    assert len(set(i["sha256"] for i in done["outputImages"])) == 3


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_output_formats(client, fmt: str) -> None:
    done = poll(client, create(client, size="64x64", outputFormat=fmt)["id"])
    r = client.get(done["outputImage"]["storageUrl"])
    assert r.headers["content-type"] == f"image/{fmt}"
    assert open_image(r.content).format == fmt.upper()


def test_prefer_wait_returns_the_finished_record(client) -> None:
    r = client.post(
        "/api/v1/generations", json={"prompt": "x", "size": "64x64"}, headers={"Prefer": "wait=30"}
    )
    assert r.status_code == 201
    assert r.json()["data"]["status"] == "success"
    assert r.headers["Preference-Applied"] == "wait=30"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": "100x100"}, "size"),
        ({"size": "4096x4096"}, "size"),
        ({"model": "nope"}, "model"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 5001}, "prompt"),
        ({"aspectRatio": "7:3"}, "aspectRatio"),
        ({"model": "tiny-square", "aspectRatio": "16:9"}, "aspectRatio"),
        ({"imageSize": "huge"}, "imageSize"),
        ({"seed": "abc"}, "seed"),
        ({"prompt": 5}, "prompt"),
        ({"bogus": 1}, "bogus"),
        ({"outputFormat": "gif"}, "outputFormat"),
        ({"enhancementOptions": {"template": "nope"}}, "enhancementOptions.template"),
        ({"sourceImageId": "00000000-0000-0000-0000-000000000000"}, "sourceImageId"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, body: dict, field: str) -> None:
    r = api.post("/api/v1/generations", json={"prompt": "a red circle"} | body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["success"] is False and err["error"]["code"] == "VALIDATION_ERROR"
    assert field in [f["field"] for f in err["error"]["fields"]], err
    # nothing was stored
    assert api.get("/api/v1/generations").json()["pagination"]["total"] == 0


def test_malformed_json_is_a_400(api) -> None:
    r = api.post("/api/v1/generations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["body"]


def test_list_filters_and_paginates(api, runtime) -> None:
    ids = [create(api, prompt=f"p{i}", size="64x64")["id"] for i in range(5)]
    api.post(f"/api/v1/generations/{ids[0]}/cancel")
    page = api.get("/api/v1/generations", params={"limit": 2, "offset": 1, "status": "pending"}).json()
    assert page["pagination"] == {
        "limit": 2,
        "offset": 1,
        "total": 4,
        "hasMore": True,
        "nextCursor": page["pagination"]["nextCursor"],
    }
    assert isinstance(page["pagination"]["nextCursor"], str)
    assert [g["id"] for g in page["data"]] == [ids[3], ids[2]]  # newest first
    canceled = api.get("/api/v1/generations", params={"status": "canceled"}).json()
    assert [g["id"] for g in canceled["data"]] == [ids[0]]
    for params, field in (
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "done"}, "status"),
    ):
        r = api.get("/api/v1/generations", params=params)
        assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == field


def test_delete_hides_and_include_deleted_shows(client) -> None:
    gid = poll(client, create(client, size="64x64")["id"])["id"]
    url = client.get(f"/api/v1/generations/{gid}").json()["data"]["outputImage"]["storageUrl"]
    assert client.delete(f"/api/v1/generations/{gid}").json() == {
        "success": True,
        "message": "Generation deleted",
    }
    assert client.get(f"/api/v1/generations/{gid}").status_code == 404
    assert client.get(url).status_code in (403, 404)
    listed = client.get("/api/v1/generations", params={"includeDeleted": "true"}).json()
    assert [g["id"] for g in listed["data"]] == [gid] and listed["data"][0]["deletedAt"]
    assert client.get("/api/v1/generations").json()["pagination"]["total"] == 0


def test_unknown_ids_are_404(api) -> None:
    r = api.get("/api/v1/generations/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "GENERATION_NOT_FOUND"
    assert api.post("/api/v1/generations/nope/cancel").status_code == 404
    assert api.delete("/api/v1/generations/nope").status_code == 404
    assert api.get("/api/v1/images/nope").status_code == 404


def test_cancel_queued(api) -> None:
    gid = create(api, size="64x64")["id"]
    r = api.post(f"/api/v1/generations/{gid}/cancel")
    assert r.status_code == 200 and r.json()["data"]["status"] == "canceled"


def test_image_links_are_signed_and_expire(client, runtime) -> None:
    done = poll(client, create(client, size="64x64")["id"])
    url = done["outputImage"]["storageUrl"]
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    tampered = dict(q, signature=q["signature"][:-1] + ("0" if q["signature"][-1] != "0" else "1"))
    later = dict(q, expires=str(int(q["expires"]) + 10))
    for params in (tampered, later, {}):
        assert client.get(f"{parts.path}?{urlencode(params)}").status_code == 403
    expired = runtime.signer.query(done["outputImageId"], ttl=-1)
    assert client.get(f"{parts.path}?{expired}").status_code == 403
    assert int(q["expires"]) - time.time() == pytest.approx(3600, abs=60)


def test_upload_then_image_to_image(client) -> None:
    up = client.post(
        "/api/v1/images",
        files={"file": ("a.png", png_bytes((64, 64)), "image/png")},
        data={"folder": "inputs"},
    )
    assert up.status_code == 201, up.text
    image = up.json()["data"]
    assert (image["width"], image["height"], image["folder"]) == (64, 64, "inputs")
    got = client.get(f"/api/v1/images/{image['id']}").json()["data"]
    assert got["sha256"] == image["sha256"]
    done = poll(client, create(client, size="64x64", sourceImageId=image["id"], strength=0.5)["id"])
    assert done["status"] == "success" and done["task"] == "image-to-image"


def test_upload_rejects_non_images(api) -> None:
    r = api.post("/api/v1/images", files={"file": ("a.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "file"


def test_models_and_health(api) -> None:
    models = api.get("/api/v1/models").json()["data"]
    tiny = next(m for m in models if m["id"] == "tiny")
    assert tiny["default"] is True and "dall-e-2" in tiny["aliases"] and tiny["maxN"] == 4
    assert api.get("/healthz").json()["status"] == "ok"
    assert api.get("/api/v1/healthz").json()["status"] == "ok"


def test_source_and_mask_by_url_and_data_uri(client, runtime) -> None:
    import base64

    from helpers import ImageServer

    runtime.generations.fetcher.allow_hosts = frozenset({"127.0.0.1"})
    mask = base64.b64encode(png_bytes((64, 64), (255, 255, 255))).decode()
    server = ImageServer({"/src.png": (png_bytes((64, 64), (10, 200, 10)), "image/png")})
    try:
        r = client.post(
            "/api/v1/generations",
            json={
                "prompt": "a red circle",
                "size": "64x64",
                "sourceImageUrl": server.url("/src.png"),
                "maskImageUrl": f"data:image/png;base64,{mask}",
            },
        )
        assert r.status_code == 201, r.text
        done = poll(client, r.json()["data"]["id"])
        assert done["status"] == "success" and done["task"] == "inpaint"
        # validation happens before any fetch: a bad size fetches nothing
        before = list(server.requests)
        bad = client.post(
            "/api/v1/generations",
            json={"prompt": "x", "size": "100x100", "sourceImageUrl": server.url("/src.png")},
        )
        assert bad.status_code == 400 and bad.json()["error"]["fields"][0]["field"] == "size"
        assert server.requests == before
        blocked = client.post(
            "/api/v1/generations",
            json={"prompt": "x", "sourceImageUrl": "http://169.254.169.254/latest/meta-data"},
        )
        assert (
            blocked.status_code == 400 and blocked.json()["error"]["fields"][0]["field"] == "sourceImageUrl"
        )
    finally:
        server.close()
