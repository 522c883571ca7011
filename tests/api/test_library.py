"""The media library (native API): folders, images by folder with pagination, move, delete, isolation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from easel.domain.keys import DEFAULT_SCOPES
from helpers import ImageServer, png_bytes
from support import key_headers

WIX_FOLDER = "Social Marketing AI Media"


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The shared settings, with the local image server's host allowed for Wix's imageUrl."""
    return settings.model_copy(update={"fetch_allow_hosts": ["127.0.0.1"]})


@pytest.fixture
def images() -> Iterator[ImageServer]:
    server = ImageServer({"/photo.png": (png_bytes((96, 64)), "image/png")})
    yield server
    server.close()


def upload(
    api: Any, folder: str | None = None, color: tuple[int, int, int] = (200, 30, 30)
) -> dict[str, Any]:
    data = {"folder": folder} if folder is not None else {}
    r = api.post(
        "/api/v1/images", files={"file": ("a.png", png_bytes((32, 32), color), "image/png")}, data=data
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()["data"]
    return body


def generate(api: Any, runtime: Any, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"} | body)
    assert r.status_code == 201, r.text
    assert runtime.make_worker().run_once()
    done: dict[str, Any] = api.get(f"/api/v1/generations/{r.json()['data']['id']}").json()["data"]
    assert done["status"] == "success"
    return done


def listing(api: Any, **params: Any) -> dict[str, Any]:
    r = api.get("/api/v1/images", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def folders(api: Any) -> dict[str | None, int]:
    r = api.get("/api/v1/folders")
    assert r.status_code == 200, r.text
    return {f["name"]: f["imageCount"] for f in r.json()["data"]}


def test_a_wix_result_is_filed_in_its_folder(api: Any, runtime: Any, images: ImageServer) -> None:
    r = api.post(
        "/social-publisher/v1/generate-image",
        json={"userInput": "a sale", "imageUrl": images.url("/photo.png")},
    )
    assert r.status_code == 200, r.text
    assert runtime.make_worker().run_once()
    done = api.get(f"/social-publisher/v1/generated-image/{r.json()['executionId']}").json()
    assert done["status"] == "READY"
    assert folders(api) == {None: 1, WIX_FOLDER: 1}  # the imported source photo is unfiled
    page = listing(api, folder=WIX_FOLDER)
    assert [i["id"] for i in page["data"]] == [done["fileId"]]
    item = page["data"][0]
    assert item["folder"] == WIX_FOLDER and item["source"] == "generated"
    assert item["generationId"] == r.json()["executionId"]
    assert api.get(item["storageUrl"]).status_code == 200
    unfiled = listing(api, folder="")["data"]
    assert len(unfiled) == 1 and unfiled[0]["source"] == "uploaded"


def test_uploaded_and_generated_side_by_side_newest_first_paginated(api: Any, runtime: Any) -> None:
    first = upload(api, "campaign")
    gen = generate(api, runtime, folder="campaign", n=2, seed=3)
    later = [upload(api, "campaign", (i, i, i)) for i in range(3)]
    upload(api, "other")
    upload(api)
    expected = (
        [u["id"] for u in reversed(later)] + [i["id"] for i in reversed(gen["outputImages"])] + [first["id"]]
    )

    page = listing(api, folder="campaign", limit=4)
    assert page["pagination"] == {
        "limit": 4,
        "offset": 0,
        "total": 6,
        "hasMore": True,
        "nextCursor": page["pagination"]["nextCursor"],
    }
    rest = listing(api, folder="campaign", limit=4, offset=4)
    assert rest["pagination"] == {"limit": 4, "offset": 4, "total": 6, "hasMore": False, "nextCursor": None}
    assert [i["id"] for i in page["data"] + rest["data"]] == expected
    sources = [i["source"] for i in page["data"] + rest["data"]]
    assert sources == ["uploaded"] * 3 + ["generated"] * 2 + ["uploaded"]

    everything = listing(api, limit=100)
    assert everything["pagination"]["total"] == 8
    assert folders(api) == {None: 1, "campaign": 6, "other": 1}
    assert list(folders(api)) == [None, "campaign", "other"]
    for params, field in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"offset": -1}, "offset")):
        r = api.get("/api/v1/images", params=params)
        assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == field


def test_move_between_folders(api: Any, runtime: Any) -> None:
    img = upload(api, "drafts")
    gen = generate(api, runtime)
    r = api.patch(f"/api/v1/images/{img['id']}", json={"folder": "final"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["folder"] == "final" and r.json()["data"]["id"] == img["id"]
    assert api.patch(f"/api/v1/images/{gen['outputImageId']}", json={"folder": "final"}).status_code == 200
    assert folders(api) == {"final": 2}
    assert api.get(f"/api/v1/images/{img['id']}").json()["data"]["folder"] == "final"
    assert [i["id"] for i in listing(api, folder="drafts")["data"]] == []
    assert api.patch(f"/api/v1/images/{img['id']}", json={"folder": None}).json()["data"]["folder"] is None
    assert folders(api) == {None: 1, "final": 1}
    for body, field in (
        ({}, "folder"),
        ({"folder": ""}, "folder"),
        ({"folder": "x" * 201}, "folder"),
        ({"folder": "a", "x": 1}, "x"),
    ):
        r = api.patch(f"/api/v1/images/{img['id']}", json=body)
        assert r.status_code == 400 and field in [f["field"] for f in r.json()["error"]["fields"]], (
            body,
            r.text,
        )
    assert api.patch("/api/v1/images/nope", json={"folder": "a"}).status_code == 404


def test_delete_removes_record_and_bytes(api: Any, runtime: Any) -> None:
    img = upload(api, "drafts")
    gen = generate(api, runtime, folder="drafts", n=2)
    doomed = gen["outputImages"][0]
    for target in (img, doomed):
        r = api.delete(f"/api/v1/images/{target['id']}")
        assert r.status_code == 200 and r.json() == {"success": True, "message": "Image deleted"}
        assert api.get(f"/api/v1/images/{target['id']}").status_code == 404
        assert api.get(target["storageUrl"]).status_code in (403, 404)  # the signed link no longer serves
        assert api.delete(f"/api/v1/images/{target['id']}").status_code == 404
    assert runtime.blobs.keys(runtime.default_project_id + "/uploads") == []
    kept = api.get(f"/api/v1/generations/{gen['id']}").json()["data"]
    assert kept["outputImageIds"] == [gen["outputImages"][1]["id"]]
    assert [i["id"] for i in listing(api, folder="drafts")["data"]] == [gen["outputImages"][1]["id"]]
    assert folders(api) == {"drafts": 1}


def test_another_project_cannot_see_move_or_delete(api: Any, runtime: Any) -> None:
    img = upload(api, "mine")
    other = runtime.repo.ensure_project("tenant-b")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    hb = key_headers(b_key)
    assert api.patch(f"/api/v1/images/{img['id']}", json={"folder": "theirs"}, headers=hb).status_code == 404
    assert api.delete(f"/api/v1/images/{img['id']}", headers=hb).status_code == 404
    theirs = api.get("/api/v1/images", headers=hb).json()
    assert theirs["data"] == [] and theirs["pagination"]["total"] == 0
    assert api.get("/api/v1/folders", headers=hb).json()["data"] == []
    assert api.get("/api/v1/images", params={"folder": "mine"}, headers=hb).json()["data"] == []
    assert api.get(f"/api/v1/images/{img['id']}").json()["data"]["folder"] == "mine"  # untouched
    assert api.get(img["storageUrl"]).status_code == 200


def test_scopes(api: Any, runtime: Any) -> None:
    img = upload(api, "a")
    pid = runtime.default_project_id
    default, _ = runtime.keys.create(pid, "default scopes", list(DEFAULT_SCOPES), rate_limit_per_hour=0)
    reader, _ = runtime.keys.create(pid, "reader", ["images:read"], rate_limit_per_hour=0)
    deleter, _ = runtime.keys.create(pid, "deleter", ["images:delete"], rate_limit_per_hour=0)
    assert api.get("/api/v1/folders", headers=key_headers(reader)).status_code == 200
    assert api.get("/api/v1/images", headers=key_headers(reader)).status_code == 200
    r = api.patch(f"/api/v1/images/{img['id']}", json={"folder": "b"}, headers=key_headers(reader))
    assert r.status_code == 403
    # images:delete is not a default scope: deleting needs a key that was given it.
    assert api.delete(f"/api/v1/images/{img['id']}", headers=key_headers(default)).status_code == 403
    assert (
        api.patch(
            f"/api/v1/images/{img['id']}", json={"folder": "b"}, headers=key_headers(default)
        ).status_code
        == 200
    )
    assert api.delete(f"/api/v1/images/{img['id']}", headers=key_headers(deleter)).status_code == 200


def test_filter_by_model(api: Any, runtime: Any) -> None:
    """`?model=` keeps the images a generation of that model made (an alias names the same model);
    uploads have no model; an unknown model is a 400 naming `model`."""
    uploaded = upload(api, "mixed")
    assert api.get(f"/api/v1/images/{uploaded['id']}").json()["data"]["source"] == "uploaded"
    tiny = generate(api, runtime, folder="mixed", seed=1)
    square = generate(api, runtime, model="tiny-square", folder="mixed", seed=2)
    by_tiny = listing(api, model="tiny")
    assert [i["id"] for i in by_tiny["data"]] == [tiny["outputImageId"]]
    assert by_tiny["pagination"]["total"] == 1
    assert [i["id"] for i in listing(api, model="tiny-alias")["data"]] == [tiny["outputImageId"]]
    assert api.get(f"/api/v1/images/{tiny['outputImageId']}").json()["data"]["source"] == "generated"
    assert [i["id"] for i in listing(api, model="tiny-square", folder="mixed")["data"]] == [
        square["outputImageId"]
    ]
    assert listing(api, model="tiny-square", folder="")["data"] == []
    r = api.get("/api/v1/images", params={"model": "nope"})
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "model", r.text
    other = runtime.repo.ensure_project("tenant-m")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    theirs = api.get("/api/v1/images", params={"model": "tiny"}, headers=key_headers(b_key)).json()
    assert theirs["data"] == [] and theirs["pagination"]["total"] == 0


def test_delete_a_folder_unfiles_its_images(api: Any, runtime: Any) -> None:
    """DELETE /api/v1/folders/{name}: the images stay, in no folder; names with a slash work; another
    project's folder of the same name is untouched; an empty or unknown folder is a 404."""
    kept = [upload(api, "2026/drafts"), upload(api, "2026/drafts")]
    elsewhere = upload(api, "final")
    other = runtime.repo.ensure_project("tenant-f")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    theirs = upload(api.__class__(api.app, headers=key_headers(b_key)), "2026/drafts")

    r = api.delete("/api/v1/folders/2026%2Fdrafts")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"name": "2026/drafts", "unfiled": 2}
    assert folders(api) == {None: 2, "final": 1}
    for img in kept:
        assert api.get(f"/api/v1/images/{img['id']}").json()["data"]["folder"] is None
    assert api.get(f"/api/v1/images/{elsewhere['id']}").json()["data"]["folder"] == "final"
    their_view = api.get(f"/api/v1/images/{theirs['id']}", headers=key_headers(b_key)).json()["data"]
    assert their_view["folder"] == "2026/drafts"
    assert api.delete("/api/v1/folders/2026%2Fdrafts").status_code == 404
    assert api.delete("/api/v1/folders/never").status_code == 404
    reader, _ = runtime.keys.create(runtime.default_project_id, "r", ["images:read"], rate_limit_per_hour=0)
    assert api.delete("/api/v1/folders/final", headers=key_headers(reader)).status_code == 403
