"""Keys, scopes, tenant isolation, rate limits, idempotency and budgets, across every dialect's routes."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from easel.app import create_app
from easel.domain.keys import parse
from helpers import png_bytes, poll
from processes import easel_env, start_api
from support import key_headers

# Routes anyone may call: health, and image bytes behind a signed link (the signature is the credential).
PUBLIC = {"/healthz", "/api/v1/healthz", "/api/v1/images/{image_id}/file"}
DUMMY = "00000000-0000-0000-0000-000000000000"
INTEGER_IDS = "/v1/ml/"  # Placewise task ids are integers


def guarded_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every documented route of every dialect (from the OpenAPI schema), path parameters filled."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if path in PUBLIC:
            continue
        for method in ops:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "1" if INTEGER_IDS in path else DUMMY, path)))
    return sorted(out)


@pytest.fixture
def app_client(runtime):  # type: ignore[no-untyped-def]
    with TestClient(create_app(runtime=runtime, with_worker=False)) as c:
        yield c


def test_every_route_of_every_dialect_needs_a_key(app_client) -> None:
    routes = guarded_routes(app_client.app)
    prefixes = {p.split("/")[1] for _, p in routes}
    assert {"api", "v1"} <= prefixes  # native and the /v1 dialects are both covered
    bad = {"Authorization": "Bearer easel_sk_nothing", "X-API-Key": "nope", "X-Client-Authorization": "x"}
    for method, path in routes:
        for headers in ({}, bad):
            r = app_client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)


def test_a_key_without_the_scope_is_403(app_client, runtime) -> None:
    key, _ = runtime.keys.create(
        runtime.default_project_id, "usage only", ["usage:read"], rate_limit_per_hour=0
    )
    for method, path in guarded_routes(app_client.app):
        if path in ("/api/v1/usage", "/api/v1/me"):  # its scope; any valid key (who am I)
            continue
        r = app_client.request(method, path, headers=key_headers(key))
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert app_client.get("/api/v1/usage", headers=key_headers(key)).status_code == 200
    assert app_client.get("/api/v1/me", headers=key_headers(key)).json()["data"]["scopes"] == ["usage:read"]


def test_revoked_and_expired_keys_are_401(app_client, runtime) -> None:
    from datetime import timedelta

    from easel.store.tables import utcnow

    key, info = runtime.keys.create(
        runtime.default_project_id, "k", ["generations:read"], rate_limit_per_hour=0
    )
    assert app_client.get("/api/v1/generations", headers=key_headers(key)).status_code == 200
    runtime.keys.revoke(info.id)
    r = app_client.get("/api/v1/generations", headers=key_headers(key))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    old, _ = runtime.keys.create(
        runtime.default_project_id, "o", ["generations:read"], expires_at=utcnow() - timedelta(seconds=1)
    )
    assert app_client.get("/api/v1/generations", headers=key_headers(old)).status_code == 401
    # a mistyped key fails its checksum before any lookup
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert parse(typo) is None
    assert app_client.get("/api/v1/generations", headers=key_headers(typo)).status_code == 401


def test_projects_are_isolated_on_every_dialect(client, runtime) -> None:
    a_gen = client.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"}).json()[
        "data"
    ]
    done = poll(client, a_gen["id"])
    a_image = done["outputImageId"]
    upload = client.post("/api/v1/images", files={"file": ("a.png", png_bytes(), "image/png")}).json()["data"]
    other = runtime.repo.ensure_project("tenant-b")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    hb = key_headers(b_key)
    for path in (
        f"/api/v1/generations/{a_gen['id']}",
        f"/api/v1/images/{a_image}",
        f"/api/v1/images/{upload['id']}",
    ):
        assert client.get(path, headers=hb).status_code == 404, path
    assert client.post(f"/api/v1/generations/{a_gen['id']}/cancel", headers=hb).status_code == 404
    assert client.delete(f"/api/v1/generations/{a_gen['id']}", headers=hb).status_code == 404
    r = client.post("/api/v1/generations", json={"prompt": "x", "sourceImageId": upload["id"]}, headers=hb)
    assert r.status_code == 400  # another project's image cannot be used as a source
    listed = client.get("/api/v1/generations", headers=hb).json()
    assert listed["data"] == [] and listed["pagination"]["total"] == 0
    # every dialect's read route answers 404 for A's job id when asked with B's key
    number = runtime.repo.task_number(runtime.default_project_id, a_gen["id"])
    hb |= {"X-Loyalty-Club-Slug": "club-b"}
    checked = 0
    for method, path in guarded_routes(client.app):
        if method != "GET" or (DUMMY not in path and INTEGER_IDS not in path) or "/images/" in path:
            continue
        own = path.replace(DUMMY, a_gen["id"]) if DUMMY in path else re.sub(r"/1(/|$)", f"/{number}\\1", path)
        r = client.get(own, headers=hb)
        assert r.status_code == 404, (own, r.status_code, r.text)
        checked += 1
    assert checked >= 4  # native, Wix, Placewise, Pictory job reads
    assert client.get(f"/api/v1/generations/{a_gen['id']}").status_code == 200  # A still sees it


def test_no_plaintext_key_in_the_database(runtime, settings, admin_key) -> None:
    secret = parse(admin_key).secret  # type: ignore[union-attr]
    engine = runtime.repo.engine
    md = MetaData()
    md.reflect(engine)
    dump = []
    with engine.connect() as conn:
        for table in md.sorted_tables:
            dump.extend(repr(tuple(row)) for row in conn.execute(select(table)))
    text = "\n".join(dump)
    assert "secret_hash" not in text and len(dump) > 0
    assert secret not in text and admin_key not in text
    if engine.dialect.name == "sqlite":
        db = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
        con = sqlite3.connect(db)
        assert secret not in "\n".join(con.iterdump())
        con.close()
        for f in db.parent.glob(db.name + "*"):
            assert secret.encode() not in f.read_bytes()


def wait_off_window_edge(window: int) -> None:
    """Fixed windows: don't start a burst in the last seconds of one (it would span two)."""
    while window - time.time() % window < 5:
        time.sleep(0.5)


def test_rate_limit_under_a_burst(runtime, live_server) -> None:
    runtime.settings.rate_limit_window_seconds = 60
    key, _ = runtime.keys.create(
        runtime.default_project_id, "limited", ["generations:read"], rate_limit_per_hour=10
    )

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, headers=key_headers(key), timeout=60) as c:
            return await asyncio.gather(*(c.get("/api/v1/generations") for _ in range(100)))

    wait_off_window_edge(60)
    responses = asyncio.run(burst())
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 10 and len(limited) == 90
    for r in limited:
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Limit"] == "10"
        assert r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in ok) == list(range(10))
    for r in responses:
        reset = int(r.headers["X-RateLimit-Reset"])
        assert 1 <= reset <= 60
        assert r.headers["RateLimit-Policy"] == '"default";q=10;w=60'
        assert r.headers["RateLimit"] == f'"default";r={r.headers["X-RateLimit-Remaining"]};t={reset}'


@pytest.mark.slow
def test_two_server_processes_share_one_limit(runtime, settings, tmp_path) -> None:
    key, _ = runtime.keys.create(
        runtime.default_project_id, "shared", ["generations:read"], rate_limit_per_hour=10
    )
    env = easel_env(settings, rate_limit_storage="database", rate_limit_window_seconds="60")
    servers = [start_api(env, tmp_path / f"api{i}.log") for i in range(2)]
    try:
        wait_off_window_edge(60)
        codes = [
            httpx.get(
                f"{servers[i % 2][1]}/api/v1/generations", headers=key_headers(key), timeout=30
            ).status_code
            for i in range(30)
        ]
    finally:
        for proc, _url in servers:
            proc.stop(30)
    assert codes.count(200) == 10 and codes.count(429) == 20


def test_idempotency_under_concurrency(runtime, live_server_no_worker, admin_key) -> None:
    body = {"prompt": "a red circle", "size": "64x64", "seed": 1}

    async def burst() -> list[httpx.Response]:
        headers = key_headers(admin_key) | {"Idempotency-Key": "create-1"}
        async with httpx.AsyncClient(base_url=live_server_no_worker, headers=headers, timeout=60) as c:
            return await asyncio.gather(*(c.post("/api/v1/generations", json=body) for _ in range(50)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert all(c in (201, 409) for c in codes), codes
    ids = {r.json()["data"]["id"] for r in responses if r.status_code == 201}
    assert len(ids) == 1
    found = runtime.generations.list(
        runtime.default_project_id, __import__("easel.domain.generation", fromlist=["ListQuery"]).ListQuery()
    )
    assert found.total == 1 and found.items[0].id in ids
    h = key_headers(admin_key) | {"Idempotency-Key": "create-1"}
    replay = httpx.post(f"{live_server_no_worker}/api/v1/generations", json=body, headers=h)
    assert replay.status_code == 201 and replay.json()["data"]["id"] in ids
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = httpx.post(f"{live_server_no_worker}/api/v1/generations", json=body | {"seed": 2}, headers=h)
    assert other.status_code == 422
    # a request rejected by validation is not stored: the same key then works with a fixed body
    h2 = key_headers(admin_key) | {"Idempotency-Key": "create-2"}
    bad = httpx.post(f"{live_server_no_worker}/api/v1/generations", json={"prompt": ""}, headers=h2)
    assert bad.status_code == 400
    good = httpx.post(f"{live_server_no_worker}/api/v1/generations", json=body, headers=h2)
    assert good.status_code == 201 and good.json()["data"]["id"] not in ids


def test_idempotency_keys_are_per_project(api, runtime) -> None:
    other = runtime.repo.ensure_project("tenant-b")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    body = {"prompt": "x", "size": "64x64"}
    a = api.post("/api/v1/generations", json=body, headers={"Idempotency-Key": "same"})
    b = api.post("/api/v1/generations", json=body, headers=key_headers(b_key) | {"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 201
    assert a.json()["data"]["id"] != b.json()["data"]["id"]


def test_credits_usage_and_budget(api, runtime) -> None:
    pid = runtime.default_project_id
    for n, model in ((1, "tiny"), (3, "tiny"), (1, "tiny-square")):
        assert (
            api.post(
                "/api/v1/generations", json={"prompt": "x", "n": n, "model": model, "size": "64x64"}
            ).status_code
            == 201
        )
    canceled = api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}).json()["data"]
    api.post(f"/api/v1/generations/{canceled['id']}/cancel")
    report = api.get("/api/v1/usage").json()["data"]
    gens = runtime.generations.list(
        pid, __import__("easel.domain.generation", fromlist=["ListQuery"]).ListQuery()
    ).items
    charged = [g for g in gens if g.status.value != "canceled"]
    assert report["totals"]["credits"] == sum(g.credits for g in charged) == 2 * 1 + 2 * 3 + 0.5
    assert report["totals"]["images"] == 5 and report["totals"]["generations"] == 3
    by_model = {m["model"]: m for m in report["byModel"]}
    assert by_model["tiny"]["credits"] == 8 and by_model["tiny-square"]["credits"] == 0.5

    runtime.keys.set_project_limits(pid, budget_credits=10.5, rate_limit_per_hour=None)
    assert api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}).status_code == 201  # 10.5
    before = runtime.generations.list(
        pid, __import__("easel.domain.generation", fromlist=["ListQuery"]).ListQuery()
    ).total
    r = api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"})
    assert r.status_code == 402 and r.json()["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert "credits" in r.json()["error"]["message"]
    after = runtime.generations.list(
        pid, __import__("easel.domain.generation", fromlist=["ListQuery"]).ListQuery()
    ).total
    assert after == before  # no job row
    assert api.get("/api/v1/usage").json()["data"]["budget"]["remaining"] == 0.0


def test_key_budget(api, runtime) -> None:
    key, _ = runtime.keys.create(
        runtime.default_project_id, "b", ["generations:write"], rate_limit_per_hour=0, budget_credits=4
    )
    h = key_headers(key)
    assert (
        api.post("/api/v1/generations", json={"prompt": "x", "n": 2, "size": "64x64"}, headers=h).status_code
        == 201
    )
    r = api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}, headers=h)
    assert r.status_code == 402 and "API key" in r.json()["error"]["message"]
    assert (
        api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}).status_code == 201
    )  # admin key


@pytest.mark.parametrize(
    ("path", "body", "id_of"),
    [
        ("/social-publisher/v1/generate-image", None, lambda j: j["executionId"]),
        (
            "/v1/ml/general/generate_image",
            {"prompt": "a red circle", "random_seed": 3},
            lambda j: j["image_generation_task"]["id"],
        ),
        ("/pictoryapis/v1/aistudio/images", {"prompt": "a red circle on blue"}, lambda j: j["data"]["jobId"]),
    ],
)
def test_idempotency_key_on_every_dialects_create_route(api, runtime, path, body, id_of) -> None:  # type: ignore[no-untyped-def]
    from easel.domain.generation import ListQuery
    from helpers import ImageServer

    headers = {"Idempotency-Key": f"retry-{path}", "X-Loyalty-Club-Slug": "club"}
    images = ImageServer({"/a.png": (png_bytes(), "image/png")})
    try:
        if body is None:  # Wix needs a source image URL, served on loopback (allow-listed)
            runtime.generations.fetcher.allow_hosts = frozenset({"127.0.0.1"})
            body = {"userInput": "add a sun", "imageUrl": images.url("/a.png")}
        first = api.post(path, json=body, headers=headers)
        again = api.post(path, json=body, headers=headers)
        changed = {k: "something else" for k in ("prompt", "userInput") if k in body}
        other = api.post(path, json=body | changed, headers=headers)
    finally:
        images.close()
    assert first.status_code == again.status_code == 200, first.text
    assert id_of(first.json()) == id_of(again.json()) and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert runtime.generations.list(runtime.default_project_id, ListQuery()).total == 1
