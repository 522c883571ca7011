"""Pages of the native lists (docs/api/native.md, "Pages"): cursors walk a list exactly once at any
depth, ties in time included; offsets still work; the total is exact up to the cap and on request; bad
cursors are a 400 naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update

from support import key_headers


def create(api: Any, **body: Any) -> str:
    r = api.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"} | body)
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def walk(api: Any, path: str, limit: int, **params: Any) -> list[str]:
    """Every id of a list, page by page through nextCursor; checks each page's pagination."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        r = api.get(path, params={"limit": limit, **params} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [item["id"] for item in body["data"]]
        p = body["pagination"]
        assert len(body["data"]) <= limit
        assert p["hasMore"] == (p["nextCursor"] is not None)
        if not p["hasMore"]:
            return seen
        cursor = p["nextCursor"]
    raise AssertionError("the cursor never reached the end")


def test_cursor_walks_generations_once_newest_first_ties_included(api: Any, runtime: Any) -> None:
    ids = [create(api, prompt=f"p{i}") for i in range(7)]
    # Three of them share one creation time: the id orders them (the cursor's key is (createdAt, id)).
    same = datetime(2026, 1, 2, 3, 4, 5, 123000).astimezone()
    from easel.store.tables import generations

    with runtime.repo.engine.begin() as conn:
        conn.execute(update(generations).where(generations.c.id.in_(ids[2:5])).values(created_at=same))
    everything = api.get("/api/v1/generations", params={"limit": 100}).json()["data"]
    expected = [g["id"] for g in everything]
    assert sorted(expected) == sorted(ids)
    for limit in (1, 2, 3, 7, 100):
        assert walk(api, "/api/v1/generations", limit) == expected, limit

    api.post(f"/api/v1/generations/{ids[6]}/cancel")
    pending = walk(api, "/api/v1/generations", 2, status="pending")
    assert pending == [i for i in expected if i != ids[6]]
    api.delete(f"/api/v1/generations/{ids[0]}")
    assert ids[0] not in walk(api, "/api/v1/generations", 3)
    assert ids[0] in walk(api, "/api/v1/generations", 3, includeDeleted="true")

    # Offsets still page the same list (the document's contract).
    by_offset = [
        g["id"]
        for offset in range(0, 6, 2)
        for g in api.get("/api/v1/generations", params={"limit": 2, "offset": offset}).json()["data"]
    ]
    assert by_offset == walk(api, "/api/v1/generations", 2)


def test_cursor_walks_images_and_the_delivery_log(api: Any, runtime: Any) -> None:
    for i in range(3):
        create(api, n=3, seed=i, folder="walk" if i else None)
    while runtime.make_worker().run_once():
        pass
    everything = [i["id"] for i in api.get("/api/v1/images", params={"limit": 100}).json()["data"]]
    assert len(everything) == 9
    for limit in (1, 2, 4):
        assert walk(api, "/api/v1/images", limit) == everything
        assert walk(api, "/api/v1/images", limit, folder="walk") == everything[:6]
        assert walk(api, "/api/v1/images", limit, folder="") == everything[6:]

    messages = api.get("/api/v1/webhooks/messages", params={"limit": 100}).json()["data"]
    assert walk(api, "/api/v1/webhooks/messages", 2) == [m["id"] for m in messages]


def test_the_total_is_exact_up_to_the_cap_and_on_request(
    api: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("easel.store.pages.TOTAL_CAP", 3)
    ids = [create(api) for _ in range(5)]
    first = api.get("/api/v1/generations", params={"limit": 2}).json()["pagination"]
    assert first["total"] is None and first["hasMore"] is True
    exact = api.get("/api/v1/generations", params={"limit": 2, "includeTotal": "true"}).json()["pagination"]
    assert exact["total"] == 5
    last = api.get("/api/v1/generations", params={"limit": 2, "offset": 4}).json()["pagination"]
    assert last == {"limit": 2, "offset": 4, "total": 5, "hasMore": False, "nextCursor": None}
    few = api.get("/api/v1/generations", params={"status": "pending", "limit": 1, "offset": 0})
    assert few.json()["pagination"]["total"] is None
    api.post(f"/api/v1/generations/{ids[0]}/cancel")
    assert api.get("/api/v1/generations", params={"status": "canceled"}).json()["pagination"]["total"] == 1


def test_bad_cursors_are_a_400_on_the_field(api: Any, runtime: Any) -> None:
    create(api)
    good = api.get("/api/v1/generations", params={"limit": 1}).json()
    create(api)
    cursor = api.get("/api/v1/generations", params={"limit": 1}).json()["pagination"]["nextCursor"]
    assert cursor and good
    for params, field in (
        ({"cursor": "nope"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # "[]"
        ({"cursor": "x" * 401}, "cursor"),
        ({"cursor": "WyIyMDI2IiwxLDJd"}, "cursor"),  # ["2026",1,2]: wrong types
        ({"cursor": cursor, "offset": 3}, "offset"),
    ):
        r = api.get("/api/v1/generations", params=params)
        assert r.status_code == 400, (params, r.text)
        assert [f["field"] for f in r.json()["error"]["fields"]] == [field], r.text
    for path in ("/api/v1/images", "/api/v1/webhooks/messages"):
        r = api.get(path, params={"cursor": "nope"})
        assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "cursor", r.text


def test_a_cursor_never_crosses_into_another_project(api: Any, runtime: Any) -> None:
    mine = [create(api) for _ in range(3)]
    cursor = api.get("/api/v1/generations", params={"limit": 1}).json()["pagination"]["nextCursor"]
    other = runtime.repo.ensure_project("tenant-pages")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    theirs = api.get("/api/v1/generations", params={"cursor": cursor}, headers=key_headers(b_key)).json()
    assert theirs["data"] == [] and theirs["pagination"]["hasMore"] is False
    assert walk(api, "/api/v1/generations", 1) == list(reversed(mine))
