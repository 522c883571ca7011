"""LoRAs per request through the HTTP API, on SQLite and PostgreSQL: the native API and the OpenAI
dialect (the official SDK, `extra_body`), Pictory and Placewise (an extension field), Wix (refused);
400s in each dialect's shape naming the field, the record, the image's parameter chunk, the credits,
and batching (another adapter set or scale is another pipeline call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from easel.domain.spec import GenerationSpec, LoraRef, OutputFormat
from easel.imaging import encode, generation_params, read_params
from helpers import open_image, png_bytes
from tiny import build_tiny_lora

NATIVE = "/api/v1/generations"
PICTORY = "/pictoryapis/v1/aistudio/images"
PLACEWISE = "/v1/ml/general/generate_image"
CLUB = {"X-Loyalty-Club-Slug": "lora-club"}
COMMON = {"prompt": "a red circle", "size": "64x64", "seed": 5, "autoEnhance": False}


@pytest.fixture(scope="module")
def loras(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Catalog sections of two LoRAs of the tiny SD model (`ink` by file, `detail` by folder), one
    declared for another family, and one whose file is missing."""
    root = tmp_path_factory.mktemp("api-loras")
    ink = build_tiny_lora(tiny_model_dir, root / "ink", "sd", seed=1)
    detail = build_tiny_lora(tiny_model_dir, root / "detail", "sd", seed=2)
    return f"""
[loras.ink]
source = "{ink}"
families = ["sd"]
scale = 0.8
trigger_words = ["inkstyle"]
credits_per_image = 0.5

[loras.detail]
source = "{detail.parent}"
families = ["sd"]
credits_per_image = 0.25

[loras.flux-only]
source = "{detail.parent}"
families = ["flux"]

[loras.gone]
source = "{root / "gone.safetensors"}"
families = ["sd"]
"""


@pytest.fixture
def settings(settings, loras: str):  # type: ignore[no-untyped-def]
    """The shared settings, with the LoRAs in the catalog."""
    with settings.catalog.open("a") as f:
        f.write(loras)
    return settings


def data(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    found: dict[str, Any] = r.json()["data"]
    return found


def fields(r: httpx.Response) -> list[tuple[str, str]]:
    """The (field, message) pairs of a native 400."""
    assert r.status_code == 400, r.text
    return [(f["field"], f["message"]) for f in r.json()["error"]["fields"]]


def pixels(raw: bytes) -> np.ndarray:
    return np.asarray(open_image(raw).convert("RGB"), dtype=np.int16)


def test_native_loras_change_the_image_and_are_recorded_charged_and_batched_apart(
    api: Any, runtime: Any
) -> None:
    plain = data(api.post(NATIVE, json=COMMON))
    plain_again = data(api.post(NATIVE, json=COMMON | {"seed": 6}))  # batches with `plain`
    ink = data(api.post(NATIVE, json=COMMON | {"loras": [{"name": "ink"}]}))
    ink_close = data(api.post(NATIVE, json=COMMON | {"loras": [{"name": "ink", "scale": 0.80001}]}))
    both = [{"name": "INK", "scale": 0.5}, {"name": "detail", "scale": -1}]
    two = data(api.post(NATIVE, json=COMMON | {"loras": both, "n": 2}))
    gone = data(api.post(NATIVE, json=COMMON | {"loras": [{"name": "gone"}]}))
    assert ink["loras"] == [{"name": "ink", "scale": 0.8}]  # the catalog's scale, recorded at creation
    assert two["loras"] == [{"name": "ink", "scale": 0.5}, {"name": "detail", "scale": -1.0}]
    assert (plain["loras"], plain["credits"], ink["credits"], two["credits"]) == ([], 2, 2.5, 5.5)
    assert ink["prompt"] == "a red circle, inkstyle" and ink["originalPrompt"] == "a red circle"

    worker = runtime.make_worker()
    sizes = []
    while worker.run_once():
        sizes.append(worker.stats.last_batch_jobs)
    assert sizes == [2, 1, 1, 1, 1]  # the plain jobs together; each adapter set or scale alone

    def done(gid: str) -> dict[str, Any]:
        return data(api.get(f"{NATIVE}/{gid}"), 200)

    records = {name: done(g["id"]) for name, g in locals().items() if name in ("plain", "ink", "two")}
    assert records["ink"]["loras"] == [{"name": "ink", "scale": 0.8}]
    failed = done(gone["id"])
    assert failed["status"] == "failed" and failed["errorCode"] == "model_unavailable"
    assert "LoRA 'gone'" in failed["errorMessage"] and "no such file" in failed["errorMessage"]
    assert done(plain_again["id"])["status"] == done(ink_close["id"])["status"] == "success"

    raw = {name: api.get(r["outputImage"]["storageUrl"]).content for name, r in records.items()}
    assert np.abs(pixels(raw["ink"]) - pixels(raw["plain"])).max() > 4
    assert np.abs(pixels(raw["two"]) - pixels(raw["ink"])).max() > 4
    params = read_params(raw["two"])
    assert json.loads(params["loras"]) == [{"name": "ink", "scale": 0.5}, {"name": "detail", "scale": -1.0}]
    assert params["parameters"].splitlines()[0] == "a red circle, inkstyle <lora:ink:0.5> <lora:detail:-1>"
    assert "loras" not in read_params(raw["plain"])


def test_native_bad_loras_are_400s_naming_the_field(api: Any) -> None:
    cases: list[tuple[Any, str, str]] = [
        ("ink", "loras", "valid list"),
        ({"name": "ink"}, "loras", "valid list"),
        ([{"scale": 0.5}], "loras.0.name", "required"),
        ([{"name": "ink", "scale": "0.5"}], "loras.0.scale", "valid number"),
        ([{"name": "ink", "scale": 9}], "loras.0.scale", "less than or equal to 4"),
        ([{"name": "ink", "weight": 1}], "loras.0.weight", "unknown field"),
        (["ink"], "loras.0", "valid dictionary"),
        ([{"name": "nope"}], "loras", "unknown LoRA 'nope'; for model tiny: detail, gone, ink"),
        ([{"name": "flux-only"}], "loras", "LoRA 'flux-only' is for flux, not model tiny (sd)"),
        ([{"name": "ink"}, {"name": "Ink"}], "loras", "named twice"),
        ([{"name": "ink"}] * 5, "loras", "at most 4"),
    ]
    for value, field, words in cases:
        found = fields(api.post(NATIVE, json=COMMON | {"loras": value}))
        assert found[0][0] == field and words in found[0][1], (value, found)
    assert api.get(NATIVE).json()["pagination"]["total"] == 0  # nothing was queued


# The SDK test runs on SQLite only: the dialect is the same HTTP layer on both databases, which the
# native test covers (records, credits, batching).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_openai_sdk_sends_loras_in_extra_body(live_server: str, admin_key: str) -> None:
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=admin_key, max_retries=0)
    common: dict[str, Any] = {"model": "tiny", "prompt": "a red circle", "size": "64x64"}
    extra = {"seed": 9, "enhance": False}
    loras = [{"name": "ink", "scale": 0.6}, {"name": "detail"}]
    result = client.images.generate(**common, extra_body=extra | {"loras": loras})
    easel = (result.model_extra or {})["easel"]
    assert easel["loras"] == [{"name": "ink", "scale": 0.6}, {"name": "detail", "scale": 1.0}]
    assert easel["credits"] == 2.75
    assert result.data and result.data[0].url
    plain = client.images.generate(**common, extra_body=extra)
    assert (plain.model_extra or {})["easel"]["loras"] == []
    with_lora, without = (httpx.get(str(r.data[0].url)).content for r in (result, plain) if r.data)
    assert np.abs(pixels(with_lora) - pixels(without)).max() > 4

    # An edit is multipart: `loras` is one form field holding the JSON array.
    edit: dict[str, Any] = {
        "model": "tiny",
        "prompt": "a blue square",
        "size": "64x64",
        "image": ("s.png", png_bytes((64, 64)), "image/png"),
    }
    edited = client.images.edit(**edit, extra_body={"loras": json.dumps([{"name": "ink"}])})
    assert (edited.model_extra or {})["easel"]["loras"] == [{"name": "ink", "scale": 0.8}]

    refusals: list[tuple[Any, str, str]] = [
        (lambda: client.images.generate(**common, extra_body={"loras": [{"name": "nope"}]}), "loras", "nope"),
        (lambda: client.images.generate(**common, extra_body={"loras": {"name": "ink"}}), "loras", "list"),
        (
            lambda: client.images.generate(**common, extra_body={"loras": [{"name": "ink", "scale": "x"}]}),
            "loras.0.scale",
            "number",
        ),
        (
            lambda: client.images.generate(**common, extra_body={"loras": [{"name": "flux-only"}]}),
            "loras",
            "is for flux",
        ),
        (lambda: client.images.edit(**edit, extra_body={"loras": "[{"}), "loras", "JSON array"),
        # The SDK's own form encoding of a list (loras[][name]): refused, saying what to send.
        (
            lambda: client.images.edit(**edit, extra_body={"loras": [{"name": "ink"}, {"name": "detail"}]}),
            "loras",
            "json.dumps",
        ),
        (lambda: client.images.edit(**edit, extra_body={"loras": [{"name": "ink"}]}), "loras", "json.dumps"),
    ]
    for call, param, words in refusals:
        with pytest.raises(openai.BadRequestError) as info:
            call()
        body: dict[str, Any] = info.value.body  # type: ignore[assignment]
        assert body["param"] == param and words in body["message"], body
        assert body["code"] == "invalid_value" and body["type"] == "invalid_request_error"


def test_pictory_and_placewise_take_loras_and_wix_refuses_them(api: Any) -> None:
    prompt = "a red circle on blue"
    r = api.post(PICTORY, json={"prompt": prompt, "loras": [{"name": "ink", "scale": 0.7}]})
    assert r.status_code == 200, r.text
    job = api.get(f"{PICTORY}/{r.json()['data']['jobId']}").json()["data"]
    assert job["loras"] == [{"name": "ink", "scale": 0.7}] and job["credits"] == 2.5  # seedream3.0: 2
    for body, field, words in [
        ({"loras": [{"name": "nope"}]}, "loras", '"loras" unknown LoRA'),
        ({"loras": "ink"}, "loras", '"loras" must be an array'),
        ({"loras": [{"name": "ink", "scale": "1"}]}, "loras.0.scale", '"loras.0.scale" must be a number'),
    ]:
        r = api.post(PICTORY, json={"prompt": prompt} | body)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST_BODY", r.text
        assert r.json()["fields"][0]["field"] == field and words in r.json()["fields"][0]["message"], r.text

    as_json = api.post(PLACEWISE, json={"prompt": prompt, "loras": [{"name": "detail"}]}, headers=CLUB)
    as_form = api.post(
        PLACEWISE,
        files={"prompt": (None, prompt), "loras": (None, json.dumps([{"name": "ink", "scale": 0.25}]))},
        headers=CLUB,
    )
    for r, expected, credits in (
        (as_json, [{"name": "detail", "scale": 1.0}], 1.25),
        (as_form, [{"name": "ink", "scale": 0.25}], 1.5),
    ):
        assert r.status_code == 200, r.text
        number = r.json()["image_generation_task"]["id"]
        task = api.get(f"/v1/ml/general/image_generation_tasks/{number}", headers=CLUB).json()
        assert task["image_generation_task"]["loras"] == expected
        assert task["image_generation_task"]["credits"] == credits  # placewise-small: 1
    for kwargs, field, words in [
        ({"json": {"prompt": prompt, "loras": [{"name": "nope"}]}}, "loras", "unknown LoRA 'nope'"),
        ({"files": {"prompt": (None, prompt), "loras": (None, "ink")}}, "loras", "JSON array"),
        ({"json": {"prompt": prompt, "loras": [{"scale": 1}]}}, "loras.0.name", "required"),
    ]:
        r = api.post(PLACEWISE, headers=CLUB, **kwargs)
        assert r.status_code == 400, r.text
        found = r.json()["error"]["fields"][0]
        assert found["field"] == field and words in found["message"], r.text

    wix = {"userInput": prompt, "imageUrl": "https://example.com/a.png", "loras": [{"name": "ink"}]}
    r = api.post("/social-publisher/v1/generate-image", json=wix)
    assert r.status_code == 400, r.text
    violation = r.json()["details"]["validationError"]["fieldViolations"][0]
    assert violation["field"] == "loras" and "takes no LoRAs" in violation["description"]
    assert api.get(NATIVE).json()["pagination"]["total"] == 3  # one Pictory job, two Placewise tasks


def test_the_parameter_chunk_holds_exact_scales_in_every_format() -> None:
    spec = GenerationSpec(
        prompt="p",
        model="m",
        width=8,
        height=8,
        steps=2,
        guidance=1.0,
        loras=[LoraRef(name="a", scale=1 / 3)],
    )
    params = generation_params(spec, 1)
    assert params["parameters"].startswith(f"p <lora:a:{1 / 3!r}>\n")
    for fmt in OutputFormat:
        found = read_params(encode(Image.new("RGB", (8, 8)), fmt, params=params).data)
        assert json.loads(found["loras"]) == [{"name": "a", "scale": 1 / 3}]


def test_the_webhook_payload_names_the_loras_and_their_scales() -> None:
    from datetime import UTC, datetime

    from easel.api.native.protocol import webhook_payload
    from easel.domain.webhooks import GenerationEvent

    def payload(spec: GenerationSpec) -> Any:
        event = GenerationEvent("generation.succeeded", "g", "p", spec, [], None, None, datetime.now(UTC))
        return json.loads(webhook_payload(event))["data"]["loras"]

    spec = GenerationSpec(
        prompt="x", loras=[LoraRef(name="ink", scale=0.8), LoraRef(name="detail", scale=-1)]
    )
    assert payload(spec) == [{"name": "ink", "scale": 0.8}, {"name": "detail", "scale": -1.0}]
    assert payload(GenerationSpec(prompt="x")) == []
