"""The console's server side: its pages and assets, their security headers, and GET /api/v1/me (the
sign-in). The pages themselves are driven in a real browser in tests/console/."""

from __future__ import annotations

import re
from typing import Any

from easel.domain.keys import DEFAULT_SCOPES
from support import key_headers

PAGES = [
    "/console/",
    "/console/signin",
    "/console/gallery",
    "/console/queue",
    "/console/admin",
    "/console/images/x",
]


def test_pages_are_served_with_a_strict_policy(api: Any) -> None:
    r = api.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/console/"
    for path in PAGES:
        r = api.get(path, headers={"Authorization": ""})  # pages need no key: the browser holds it
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in csp, (path, csp)
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
        assert "<script" in r.text and not re.search(r'(?:src|href|action)="(?:https?:)?//', r.text), path
    js = api.get("/console/static/js/api.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["x-content-type-options"] == "nosniff"
    assert api.get("/console/static/js/nope.js").status_code == 404
    # A path out of the static folder (dots encoded, so that no client normalises them away) is refused.
    assert api.get("/console/static/%2e%2e/__init__.py").status_code == 404
    assert api.get("/console/static/js/%2e%2e/%2e%2e/__init__.py").status_code == 404


def test_assets_reference_no_other_host(api: Any) -> None:
    """Every asset the console loads is served by Easel (no CDN): no absolute URL in the templates, the
    CSS or the scripts, and every module a page imports exists."""
    from pathlib import Path

    import easel.console as console

    static = Path(console.__file__).parent / "static"
    for path in static.rglob("*"):
        if path.suffix in {".js", ".css"}:
            text = path.read_text()
            assert not re.search(
                r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org/2000/svg", "")
            ), path
            for module in re.findall(r'from "\./([a-z]+\.js)"', text):
                assert (static / "js" / module).exists(), (path, module)


def test_me_tells_a_key_about_itself(api: Any, runtime: Any) -> None:
    r = api.get("/api/v1/me")
    assert r.status_code == 200, r.text
    me = r.json()["data"]
    assert me["scopes"] == ["admin"] and me["serverAdmin"] is True and me["projectName"] == "local"
    assert me["keyName"] == "test admin" and me["authEnabled"] is True

    reader, info = runtime.keys.create(
        runtime.default_project_id, "reader", ["images:read"], rate_limit_per_hour=7
    )
    me = api.get("/api/v1/me", headers=key_headers(reader)).json()["data"]
    assert me["keyId"] == info.id and me["scopes"] == ["images:read"] and me["rateLimitPerHour"] == 7
    assert me["serverAdmin"] is False

    other = runtime.repo.ensure_project("tenant-me")
    b_key, _ = runtime.keys.create(other, "b", ["admin"], rate_limit_per_hour=0)
    me = api.get("/api/v1/me", headers=key_headers(b_key)).json()["data"]
    assert me["projectName"] == "tenant-me" and me["serverAdmin"] is False

    default, dinfo = runtime.keys.create(
        runtime.default_project_id, "d", list(DEFAULT_SCOPES), rate_limit_per_hour=0
    )
    assert api.get("/api/v1/me", headers=key_headers(default)).json()["data"]["scopes"] == sorted(
        DEFAULT_SCOPES
    )
    runtime.keys.revoke(dinfo.id)
    r = api.get("/api/v1/me", headers=key_headers(default))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    r = api.get("/api/v1/me", headers={"Authorization": "Bearer easel_sk_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    r = api.get("/api/v1/me", headers={"Authorization": "", "X-API-Key": "", "X-Client-Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Missing API key"


def test_me_counts_against_the_rate_limit(api: Any, runtime: Any) -> None:
    limited, _ = runtime.keys.create(runtime.default_project_id, "l", ["images:read"], rate_limit_per_hour=2)
    codes = [api.get("/api/v1/me", headers=key_headers(limited)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_the_console_can_be_turned_off(settings: Any) -> None:
    from fastapi.testclient import TestClient

    from easel.app import create_app
    from easel.runtime import Runtime

    off = settings.model_copy(update={"console_enabled": False})
    rt = Runtime.build(off)
    try:
        with TestClient(create_app(runtime=rt, with_worker=False)) as c:
            assert c.get("/", follow_redirects=False).status_code == 404
            assert c.get("/console/").status_code == 404
            assert c.get("/console/static/js/api.js").status_code == 404
    finally:
        rt.close()


def test_the_policy_lets_images_come_from_where_the_links_point() -> None:
    """With EASEL_PUBLIC_URL, or presigned S3 links, the pages' img-src names those origins (and only
    img-src: scripts and requests stay on this server)."""
    from easel.console import content_security_policy
    from easel.settings import Settings

    def img_src(**fields: Any) -> list[str]:
        policy = content_security_policy(Settings(**fields))
        assert "script-src 'self';" in policy and "connect-src 'self';" in policy
        [directive] = [d.strip() for d in policy.split(";") if d.strip().startswith("img-src")]
        return directive.split()[1:]

    assert img_src() == ["'self'", "data:", "blob:"]
    assert img_src(public_url="https://images.example.com/base/") == [
        "'self'",
        "data:",
        "blob:",
        "https://images.example.com",
    ]
    s3 = {"storage_url": "s3://bucket/prefix", "s3_endpoint_url": "http://10.0.0.5:7480"}
    assert img_src(**s3)[-1] == "http://10.0.0.5:7480"
    assert img_src(**s3, s3_public_endpoint_url="https://cdn.example.com")[-1] == "https://cdn.example.com"
    assert img_src(storage_url="s3://bucket")[-1] == "https://*.amazonaws.com"
    assert img_src(**s3, s3_presign=False) == ["'self'", "data:", "blob:"]  # Easel's own links
