"""Admin boundaries (key ids that leak nothing, limits only the server admin sets), CORS and the docs
switch."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from easel.app import CORS_ALLOW_HEADERS, create_app
from easel.settings import Settings
from support import key_headers

UNKNOWN = "zzzzzzzzzzzz"


def project_admin(runtime: Any, name: str = "tenant") -> tuple[str, dict[str, str]]:
    """A second project and an admin key of it (a project admin, not the server admin)."""
    pid = runtime.repo.ensure_project(name)
    key, _ = runtime.keys.create(pid, "tenant admin", ["admin"], rate_limit_per_hour=0)
    return pid, key_headers(key)


def error_of(r: Any) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    return body["error"]


# -- admin: another project's key is "not found" like an unknown id -----------------------------------


def test_another_projects_key_is_not_found_like_an_unknown_id(api: Any, runtime: Any) -> None:
    _, tenant = project_admin(runtime)
    _, local_key = runtime.keys.create(runtime.default_project_id, "local app", ["generations:read"])
    theirs = api.delete(f"/api/v1/admin/keys/{local_key.id}", headers=tenant)
    unknown = api.delete(f"/api/v1/admin/keys/{UNKNOWN}", headers=tenant)
    assert theirs.status_code == unknown.status_code == 404
    a, b = error_of(theirs), error_of(unknown)
    assert a["code"] == b["code"]
    assert a["message"] == b["message"].replace(UNKNOWN, local_key.id) == f"key {local_key.id} not found"
    assert runtime.default_project_id not in theirs.text
    assert runtime.keys.get(local_key.id).revoked_at is None  # and nothing happened
    # The server admin does revoke it; the tenant's own keys are its to revoke.
    assert api.delete(f"/api/v1/admin/keys/{local_key.id}").status_code == 200
    own = api.post("/api/v1/admin/keys", json={"name": "own", "scopes": ["images:read"]}, headers=tenant)
    assert own.status_code == 201
    assert api.delete(f"/api/v1/admin/keys/{own.json()['data']['id']}", headers=tenant).status_code == 200


# -- admin: budgets and rate limits are the server admin's ---------------------------------------------


def test_only_the_server_admin_changes_a_projects_budget_and_rate_limit(api: Any, runtime: Any) -> None:
    pid, tenant = project_admin(runtime)
    url = f"/api/v1/admin/projects/{pid}"
    set_by_owner = api.patch(url, json={"budgetCredits": 10, "rateLimitPerHour": 50})
    assert set_by_owner.status_code == 200
    for change in (
        {"budgetCredits": 1000},
        {"budgetCredits": None},
        {"rateLimitPerHour": 0},
        {"rateLimitPerHour": 51},
    ):
        r = api.patch(url, json=change, headers=tenant)
        assert r.status_code == 403, change
        assert "server's admin" in error_of(r)["message"]
    info = runtime.keys.project(pid)
    assert (info.budget_credits, info.rate_limit_per_hour) == (10, 50)
    # Its own record_parameters, and a PATCH that repeats the current limits, are the tenant's.
    r = api.patch(
        url, json={"recordParameters": False, "budgetCredits": 10, "rateLimitPerHour": 50}, headers=tenant
    )
    assert r.status_code == 200 and r.json()["data"]["recordParameters"] is False
    assert r.json()["data"]["budgetCredits"] == 10 and r.json()["data"]["rateLimitPerHour"] == 50
    # The local project's admin is the server admin: it changes its own limits too.
    assert (
        api.patch(
            f"/api/v1/admin/projects/{runtime.default_project_id}", json={"budgetCredits": 5}
        ).status_code
        == 200
    )


def test_a_project_admin_cannot_mint_keys_above_the_projects_rate_limit(api: Any, runtime: Any) -> None:
    pid, tenant = project_admin(runtime)
    assert api.patch(f"/api/v1/admin/projects/{pid}", json={"rateLimitPerHour": 50}).status_code == 200
    body = {"name": "k", "scopes": ["generations:read"]}
    for limit in (0, 51):  # unlimited, or above the project's
        r = api.post("/api/v1/admin/keys", json=body | {"rateLimitPerHour": limit}, headers=tenant)
        assert r.status_code == 403, limit
    for limit in (None, 1, 50):
        r = api.post("/api/v1/admin/keys", json=body | {"rateLimitPerHour": limit}, headers=tenant)
        assert r.status_code == 201 and r.json()["data"]["rateLimitPerHour"] == limit
    # The server admin may give the tenant any key.
    r = api.post("/api/v1/admin/keys", json=body | {"projectId": pid, "rateLimitPerHour": 0})
    assert r.status_code == 201


# -- CORS ------------------------------------------------------------------------------------------------

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ORIGIN = "https://app.example"


def client_with(runtime: Any, admin_key: str, **overrides: Any) -> TestClient:
    settings = runtime.settings.model_copy(update=overrides)
    return TestClient(
        create_app(settings, runtime=runtime, with_worker=False), headers=key_headers(admin_key)
    )


def preflight(c: TestClient, origin: str, path: str = "/api/v1/generations") -> Any:
    return c.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": ", ".join(h.lower() for h in CORS_ALLOW_HEADERS),
        },
    )


@SQLITE_ONLY
def test_no_cors_headers_unless_origins_are_configured(runtime: Any, admin_key: str) -> None:
    with client_with(runtime, admin_key) as c:
        assert runtime.settings.cors_origins == []
        r = preflight(c, ORIGIN)
        assert r.status_code != 200 and "access-control-allow-origin" not in r.headers
        r = c.get("/api/v1/generations", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)


@SQLITE_ONLY
def test_a_configured_origin_gets_preflight_and_readable_headers(runtime: Any, admin_key: str) -> None:
    with client_with(runtime, admin_key, cors_origins=[ORIGIN, "http://localhost:3000"]) as c:
        r = preflight(c, ORIGIN)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
        assert {h.lower() for h in CORS_ALLOW_HEADERS} <= allowed
        # Another origin is refused (no allow-origin for it).
        r = preflight(c, "https://evil.example")
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        # A simple request: allowed origin, and the rate-limit and replay headers are readable.
        r = c.get("/api/v1/generations", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"x-ratelimit-remaining", "ratelimit", "ratelimit-policy", "idempotent-replayed"} <= exposed
        assert "access-control-allow-credentials" not in r.headers  # keys travel in headers, not cookies
        r = c.get("/api/v1/generations", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        # Errors carry the headers too, so a page can read a 401.
        r = c.get("/api/v1/generations", headers={"Origin": ORIGIN, "Authorization": "", "X-API-Key": ""})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN


@SQLITE_ONLY
def test_star_allows_every_origin(runtime: Any, admin_key: str) -> None:
    with client_with(runtime, admin_key, cors_origins=["*"]) as c:
        assert preflight(c, "https://anywhere.example").headers["access-control-allow-origin"] == "*"
        r = c.get("/api/v1/generations", headers={"Origin": "https://anywhere.example"})
        assert r.headers["access-control-allow-origin"] == "*"


def test_cors_origins_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_CORS_ORIGINS", " https://a.example, http://localhost:3000 ,")
    assert Settings().cors_origins == ["https://a.example", "http://localhost:3000"]
    monkeypatch.setenv("EASEL_CORS_ORIGINS", "")
    assert Settings().cors_origins == []
    for bad in ("https://app.example/", "app.example", "https://app.example/path"):
        monkeypatch.setenv("EASEL_CORS_ORIGINS", f"*,{bad}")
        with pytest.raises(ValueError, match="not an origin"):
            Settings()
    monkeypatch.delenv("EASEL_CORS_ORIGINS")
    monkeypatch.setenv("EASEL_DOCS_ENABLED", "false")
    assert Settings().docs_enabled is False


# -- the docs switch ---------------------------------------------------------------------------------------

DOCS = ("/docs", "/redoc", "/openapi.json")


@SQLITE_ONLY
def test_docs_are_public_by_default(runtime: Any, admin_key: str) -> None:
    with client_with(runtime, admin_key) as c:
        for path in DOCS:
            assert c.get(path, headers={"Authorization": "", "X-API-Key": ""}).status_code == 200, path
        assert c.get("/openapi.json").json()["info"]["title"] == "Easel"


@SQLITE_ONLY
def test_docs_can_be_turned_off(runtime: Any, admin_key: str) -> None:
    with client_with(runtime, admin_key, docs_enabled=False) as c:
        for path in DOCS:
            assert c.get(path).status_code == 404, path
        assert c.get("/api/v1/generations").status_code == 200  # the API itself is unchanged
        assert c.app.openapi()["paths"]  # type: ignore[attr-defined]  # the schema still exists in-process
