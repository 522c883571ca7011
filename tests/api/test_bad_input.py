"""Bad input on every dialect: malformed, oversized, deeply nested or out-of-range requests are 4xx in the
dialect's own error shape, naming the field, and store nothing (docs/security.md, "Limits")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from helpers import png_bytes

CLUB = {"X-Loyalty-Club-Slug": "club"}
Fields = Callable[[dict[str, Any]], list[str | None]]


def _native(b: dict[str, Any]) -> list[str | None]:
    """Native's and Placewise's `error.fields`."""
    return [f["field"] for f in b["error"]["fields"]]


def _openai(b: dict[str, Any]) -> list[str | None]:
    return [b["error"]["param"]]


def _pictory(b: dict[str, Any]) -> list[str | None]:
    return [f["field"] for f in b.get("fields", [])]


def _wix(b: dict[str, Any]) -> list[str | None]:
    details = b["details"]
    if "validationError" in details:
        return [v["field"] for v in details["validationError"]["fieldViolations"]]
    return []


# dialect -> (create route, extra headers, a valid body, its prompt field, the fields named by an error)
DIALECTS: dict[str, tuple[str, dict[str, str], dict[str, Any], str, Fields]] = {
    "native": ("/api/v1/generations", {}, {"prompt": "a red circle"}, "prompt", _native),
    "openai": ("/v1/images/generations", {}, {"prompt": "a red circle"}, "prompt", _openai),
    "pictory": ("/pictoryapis/v1/aistudio/images", {}, {"prompt": "a red circle"}, "prompt", _pictory),
    "placewise": ("/v1/ml/general/generate_image", CLUB, {"prompt": "a red circle"}, "prompt", _native),
    "wix": (
        "/social-publisher/v1/generate-image",
        {},
        {"userInput": "a red circle", "imageUrl": "https://example.com/a.png"},
        "userInput",
        _wix,
    ),
}
ALL = sorted(DIALECTS)


def error_code(dialect: str, body: dict[str, Any]) -> str:
    if dialect in ("native", "openai", "placewise"):
        return str(body["error"]["code"]).lower()
    if dialect == "pictory":
        return str(body["code"]).lower()
    return str(body["details"].get("applicationError", {}).get("code", "validation_error")).lower()


def stored(api: Any) -> int:
    return int(api.get("/api/v1/generations").json()["pagination"]["total"])


def post_raw(api: Any, dialect: str, content: bytes, ctype: str = "application/json") -> Any:
    path, headers, *_ = DIALECTS[dialect]
    return api.post(path, content=content, headers=headers | {"Content-Type": ctype})


# -- 1. malformed bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ALL)
def test_invalid_utf8_json_is_a_400_naming_the_body(api: Any, dialect: str) -> None:
    r = post_raw(api, dialect, b"\xff")
    assert r.status_code == 400, r.text
    fields = DIALECTS[dialect][4](r.json())
    assert fields in (["body"], [None]), r.text  # OpenAI's `param` is null for the body
    assert "UTF-8" in r.text
    assert stored(api) == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/images/edits", {}), ("/v1/ml/general/generate_image", CLUB), ("/api/v1/images", {})],
)
def test_multipart_without_boundary_is_a_400(api: Any, path: str, headers: dict[str, str]) -> None:
    r = api.post(path, content=b"--x\r\n", headers=headers | {"Content-Type": "multipart/form-data"})
    assert r.status_code == 400, r.text
    assert "boundary" in r.text.lower()


def test_too_many_fields_parts_and_files_are_400s(api: Any) -> None:
    # Too many text fields (the form reader takes 100), on a form Easel reads itself and on a File route.
    many = "&".join(f"f{i}=x" for i in range(1001)).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = api.post("/v1/ml/general/generate_image", content=many, headers=CLUB | form)
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "body", r.text
    assert "Too many fields" in r.text
    r = api.post("/api/v1/images", files=[(f"f{i}", (None, "x")) for i in range(20)])
    assert r.status_code == 400 and _native(r.json()) == ["body"], r.text
    # A text part over 1 MB.
    big = [("prompt", (None, "x" * (1024 * 1024 + 10))), ("image", ("a.png", png_bytes(), "image/png"))]
    r = api.post("/v1/images/edits", files=big)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value", r.text
    assert "maximum size" in r.json()["error"]["message"]
    # More files than OpenAI's edits take (16 images + a mask), and two files on the upload route.
    files = [("image[]", (f"{i}.png", b"x", "image/png")) for i in range(18)]
    r = api.post("/v1/images/edits", data={"prompt": "x"}, files=files)
    assert r.status_code == 400 and "Too many files" in r.text, r.text
    two = [("file", ("a.png", png_bytes(), "image/png"))] * 2
    r = api.post("/api/v1/images", files=two)
    assert r.status_code == 400 and "Too many files" in r.text, r.text
    assert stored(api) == 0


def test_idempotent_form_reads_the_same_limits(api: Any) -> None:
    """The Idempotency-Key fingerprint parses the form first: with the route's limits, not laxer ones."""
    files = [("image[]", (f"{i}.png", b"x", "image/png")) for i in range(18)]
    r = api.post("/v1/images/edits", data={"prompt": "x"}, files=files, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 400 and "Too many files" in r.text, r.text


# -- 2. depth and size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ALL)
def test_json_nested_1000_deep_is_a_400(api: Any, dialect: str) -> None:
    body = json.dumps(DIALECTS[dialect][2])[:-1] + ', "x": ' + "[" * 1000 + "]" * 1000 + "}"
    r = post_raw(api, dialect, body.encode())
    assert r.status_code == 400, r.text
    assert "nested deeper than 32" in r.text
    assert stored(api) == 0


def test_json_nested_past_the_body_depth_names_the_member(api: Any) -> None:
    body = '{"prompt": "x", "size": ' + "[" * 40 + "]" * 40 + "}"
    r = post_raw(api, "native", body.encode())
    assert r.status_code == 400 and _native(r.json()) == ["size"], r.text


def test_admin_routes_refuse_deep_json(api: Any) -> None:
    body = '{"name": ' + "[" * 1000 + "]" * 1000 + "}"
    r = api.post("/api/v1/admin/projects", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and _native(r.json()) == ["body"], r.text


def test_meta_depth_and_size_are_bounded(api: Any) -> None:
    deep: Any = "x"
    for _ in range(9):
        deep = {"a": deep}
    r = api.post("/api/v1/generations", json={"prompt": "x", "meta": deep})
    assert r.status_code == 400 and _native(r.json()) == ["meta"], r.text
    assert "nested deeper than 8" in r.text
    r = api.post("/api/v1/generations", json={"prompt": "x", "meta": {"a": "x" * 17_000}})
    assert r.status_code == 400 and _native(r.json()) == ["meta"], r.text
    assert "16384 bytes" in r.text
    ok: Any = "x"
    for _ in range(8):
        ok = {"a": ok}
    r = api.post("/api/v1/generations", json={"prompt": "x", "meta": ok | {"b": "y" * 16_000}})
    assert r.status_code == 201, r.text
    assert stored(api) == 1


@pytest.mark.parametrize("dialect", ALL)
def test_a_body_over_the_cap_is_a_413_in_the_dialect_shape(api: Any, dialect: str) -> None:
    path, headers, body, _, _ = DIALECTS[dialect]
    cap = 64 * 1024 * 1024 if dialect == "openai" else 1024 * 1024
    if dialect == "native":
        cap = 4 * 1024 * 1024
    padded = json.dumps(body | {"pad": "x" * cap}).encode()
    r = api.post(path, content=padded, headers=headers | {"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert error_code(dialect, r.json()) == "payload_too_large", r.text
    assert str(cap) in r.text
    # Without a Content-Length (chunked), the bytes are counted as they arrive.
    r = api.post(path, content=iter([padded[:1000], padded[1000:]]), headers=headers)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413, r.text
    assert stored(api) == 0


def test_native_accepts_two_data_uris_of_the_documented_length(api: Any) -> None:
    """sourceImageUrl and maskImageUrl take data: URIs of up to 2,000,000 characters: the JSON cap
    (4 MiB) leaves room for both, so the body is read and the URI itself is judged."""
    uri = "data:image/png;base64," + "A" * (2_000_000 - 22)
    body = {"prompt": "x", "sourceImageUrl": uri, "maskImageUrl": uri}
    r = api.post("/api/v1/generations", json=body)
    assert r.status_code == 400, r.text
    assert _native(r.json())[0] in ("sourceImageUrl", "maskImageUrl"), r.text


# -- 3. prompt text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ALL)
def test_a_lone_surrogate_in_the_prompt_is_a_400(api: Any, dialect: str) -> None:
    _, _, body, field, fields = DIALECTS[dialect]
    raw = json.dumps(body | {field: "a red \ud800 circle"})  # json escapes it: "\ud800"
    assert "\\ud800" in raw
    r = post_raw(api, dialect, raw.encode())
    assert r.status_code == 400, r.text
    assert fields(r.json()) == [field], r.text
    assert "Unicode" in r.text
    assert stored(api) == 0


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85"])
def test_control_characters_in_the_prompt_are_a_400(api: Any, dialect: str, char: str) -> None:
    path, headers, body, field, fields = DIALECTS[dialect]
    r = api.post(path, json=body | {field: f"a red {char} circle"}, headers=headers)
    assert r.status_code == 400, r.text
    assert fields(r.json()) == [field], r.text
    assert "control characters" in r.text
    assert stored(api) == 0


def test_tab_and_newlines_are_allowed_and_negative_prompt_is_checked(api: Any) -> None:
    r = api.post("/api/v1/generations", json={"prompt": "a red\tcircle\r\non white\n"})
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/generations", json={"prompt": "x", "negativePrompt": "blue\x00"})
    assert r.status_code == 400 and _native(r.json()) == ["negativePrompt"], r.text
    r = api.post("/v1/images/edits", data={"prompt": "a \x01 b"}, files={"image": ("a.png", png_bytes())})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    assert stored(api) == 1


# -- 4. the upload route streams to a spool and stops at the cap ----------------------------------------


def test_upload_over_the_file_cap_is_refused_while_it_streams(api: Any) -> None:
    """A 60 MiB upload without Content-Length: refused with a 413 once the route's cap (one 50 MiB file
    and its fields) is passed, without reading the rest of the body."""
    app = api.app
    chunk = 1024 * 1024
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    pulled = 0
    key = api.headers["X-API-Key"]

    async def run() -> tuple[int, bytes]:
        nonlocal pulled
        status, body = 0, b""
        headers = [
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"x-api-key", key.encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/images",
            "raw_path": b"/api/v1/images",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            pulled += 1
            if pulled == 1:
                return {"type": "http.request", "body": head, "more_body": True}
            if pulled > 60:
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": b"\0" * chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        await app(scope, receive, send)
        return status, body

    status, body = api.portal.call(run)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert pulled <= 53  # 51 MiB read at most, not the 60 sent


def test_upload_with_a_content_length_over_the_cap_is_refused_before_reading(api: Any) -> None:
    files = {"file": ("a.png", b"\0" * (51 * 1024 * 1024 + 10), "image/png")}
    r = api.post("/api/v1/images", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE", r.text
    r = api.get("/api/v1/images")
    assert r.json()["pagination"]["total"] == 0


# -- 5. integers past 64 bits ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/generations", "/api/v1/images", "/api/v1/webhooks/messages"])
def test_huge_offsets_are_a_400(api: Any, path: str) -> None:
    r = api.get(path, params={"offset": 2**63})
    assert r.status_code == 400 and _native(r.json()) == ["offset"], r.text
    assert api.get(path, params={"offset": 10**9}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/v1/admin/projects", {"name": "p", "rateLimitPerHour": 2**63}, "rateLimitPerHour"),
        ("post", "/api/v1/admin/projects", {"name": "p", "budgetCredits": 1e300}, "budgetCredits"),
        ("patch", "/api/v1/admin/projects/local", {"rateLimitPerHour": 2**64}, "rateLimitPerHour"),
        ("post", "/api/v1/admin/keys", {"rateLimitPerHour": 2**63}, "rateLimitPerHour"),
        ("post", "/api/v1/admin/keys", {"budgetCredits": 2**70}, "budgetCredits"),
    ],
)
def test_admin_numbers_are_bounded(api: Any, method: str, path: str, body: Any, field: str) -> None:
    r = getattr(api, method)(path, json=body)
    assert r.status_code == 400 and _native(r.json()) == [field], r.text


def test_infinite_budget_is_a_400(api: Any) -> None:
    raw = b'{"name": "p", "budgetCredits": Infinity}'
    r = api.post("/api/v1/admin/projects", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and _native(r.json()) == ["budgetCredits"], r.text


@pytest.mark.parametrize(
    ("dialect", "extra", "field"),
    [
        ("native", {"seed": 2**63}, "seed"),
        ("native", {"priority": 2**63}, "priority"),
        ("native", {"steps": 2**64}, "steps"),
        ("native", {"n": 2**63}, "n"),
        ("native", {"width": 2**63, "height": 64}, "width"),
        ("native", {"outputCompression": 2**63}, "outputCompression"),
        ("openai", {"seed": 2**63}, "seed"),
        ("openai", {"n": 2**63}, "n"),
        ("openai", {"steps": 2**63}, "steps"),
        ("placewise", {"random_seed": 2**63}, "random_seed"),
        ("placewise", {"creativity": 2**63}, "creativity"),
    ],
)
def test_huge_integers_in_create_bodies_are_a_400(api: Any, dialect: str, extra: Any, field: str) -> None:
    path, headers, body, _, fields = DIALECTS[dialect]
    r = api.post(path, json=body | extra, headers=headers)
    assert r.status_code == 400 and fields(r.json()) == [field], r.text
    assert stored(api) == 0


def test_placewise_form_integers_are_bounded_too(api: Any) -> None:
    form = {"prompt": "x", "random_seed": str(2**63)}
    r = api.post("/v1/ml/general/generate_image", data=form, headers=CLUB)
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "random_seed", r.text


# -- 6. the public image link ----------------------------------------------------------------------------


def test_non_ascii_signature_is_a_403(api: Any) -> None:
    r = api.get("/api/v1/images/x/file?expires=9999999999&signature=%C3%A9")
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", r.text
    r = api.get(f"/api/v1/images/x/file?expires={2**63}&signature=ab")
    assert r.status_code == 400 and _native(r.json()) == ["expires"], r.text


def test_a_non_ascii_key_is_a_401(api: Any) -> None:
    key = api.headers["X-API-Key"]
    for forged in (key[:-1] + "é", "é" + key[1:], key[:20] + "é" + key[21:]):
        headers = {"X-API-Key": forged.encode("latin-1"), "Authorization": b""}
        r = api.get("/api/v1/models", headers=headers)
        assert r.status_code == 401, r.text


def test_aigne_image_link_with_unicode_digits_is_not_a_500(api: Any) -> None:
    body = {"prompt": "x", "image": "http://testserver/api/v1/images/abc/file?expires=²&signature=x"}
    r = api.post("/api/images/generations", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text  # not our link


def test_usage_dates_are_iso_only(api: Any) -> None:
    r = api.get("/api/v1/usage", params={"to": "0.5"})
    assert r.status_code == 400 and _native(r.json()) == ["to"], r.text
    # A date-time without a time zone is UTC (it was a 500: the store takes aware times only).
    r = api.get("/api/v1/usage", params={"from": "2026-01-01", "to": "2026-02-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    r = api.post("/api/v1/admin/keys", json={"expiresAt": "2099-01-01T00:00:00"})
    assert r.status_code == 201 and r.json()["data"]["expiresAt"] == "2099-01-01T00:00:00.000Z", r.text


# -- 7. JSON doors take JSON types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "extra", "field"),
    [
        ("native", {"n": "2"}, "n"),
        ("native", {"n": True}, "n"),
        ("native", {"seed": 1.0}, "seed"),
        ("native", {"autoEnhance": 1}, "autoEnhance"),
        ("native", {"guidance": "4"}, "guidance"),
        ("openai", {"n": "2"}, "n"),
        ("openai", {"n": True}, "n"),
        ("openai", {"enhance": "false"}, "enhance"),
        ("pictory", {"prompt": 12345}, "prompt"),
        ("wix", {"userInput": 12345}, "userInput"),
    ],
)
def test_json_values_are_not_coerced(api: Any, dialect: str, extra: Any, field: str) -> None:
    path, headers, body, _, fields = DIALECTS[dialect]
    r = api.post(path, json=body | extra, headers=headers)
    assert r.status_code == 400 and fields(r.json()) == [field], r.text
    assert stored(api) == 0


def test_json_enums_and_floats_still_read(api: Any) -> None:
    body = {"prompt": "x", "task": "text-to-image", "outputFormat": "jpeg", "guidance": 4, "n": 1}
    r = api.post("/api/v1/generations", json=body)
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/admin/keys", json={"expiresAt": "2099-01-01T00:00:00Z", "budgetCredits": 5})
    assert r.status_code == 201, r.text
    # Forms stay lax: every value of a form is a string.
    r = api.post("/v1/ml/general/generate_image", data={"prompt": "x", "creativity": "3"}, headers=CLUB)
    assert r.status_code == 200, r.text


# -- 8. the OpenAPI document and the methods of a path ---------------------------------------------------


def test_openapi_lists_the_real_statuses_in_each_dialect_shape() -> None:
    from easel.app import create_app

    doc = create_app().openapi()
    assert "HTTPValidationError" not in json.dumps(doc)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "400" in codes or not (op.get("parameters") or op.get("requestBody")), (method, path)
            if "422" in codes:  # only where an Idempotency-Key may be reused with another body
                assert method == "post" and "402" in codes, (method, path)
    create = doc["paths"]["/api/v1/generations"]["post"]
    assert {"201", "400", "401", "402", "403", "404", "409", "413", "422", "429"} <= set(create["responses"])
    assert create["x-max-body-bytes"] == 4 * 1024 * 1024
    native_400 = create["responses"]["400"]["content"]["application/json"]["schema"]
    assert native_400["required"] == ["success", "error"]
    openai = doc["paths"]["/v1/images/generations"]["post"]["responses"]
    assert openai["400"]["content"]["application/json"]["schema"]["required"] == ["error"]
    assert {"500", "503", "504"} <= set(openai)
    wix = doc["paths"]["/social-publisher/v1/generate-image"]["post"]["responses"]
    assert wix["400"]["content"]["application/json"]["schema"]["required"] == ["message", "details"]
    link = doc["paths"]["/api/v1/images/{image_id}/file"]["get"]["responses"]
    assert "401" not in link and "403" in link and "image/png" in link["200"]["content"]
    schemas = doc["components"]["schemas"]
    assert schemas["CreateGenerationRequest"]["properties"]["prompt"]["minLength"] == 1
    assert schemas["CreateGenerationRequest"]["properties"]["n"]["maximum"] == 100
    assert doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/api/v1/generations", "GET, POST"),
        ("PUT", "/api/v1/generations", "GET, POST"),
        ("OPTIONS", "/api/v1/images/abc", "DELETE, GET, PATCH"),
        ("GET", "/v1/images/edits", "POST"),
        ("DELETE", "/social-publisher/v1/generate-image", "POST"),
    ],
)
def test_a_method_the_path_lacks_is_a_405_allowing_all_of_its_methods(
    method: str, path: str, allow: str
) -> None:
    from fastapi.testclient import TestClient

    from easel.app import create_app

    r = TestClient(create_app()).request(method, path)  # no lifespan: nothing is reached
    assert r.status_code == 405, r.text
    assert r.headers["Allow"] == allow
    assert "method_not_allowed" in r.text.lower()
