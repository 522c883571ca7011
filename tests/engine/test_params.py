"""Generation parameters recorded in the image files (PNG text chunks; EXIF for JPEG/WebP), per request."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from easel.imaging import DIGITAL_SOURCE_TYPE, XMP_PNG_KEY, read_params


def create(api: Any, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x64"} | body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def run(api: Any, runtime: Any, gid: str) -> dict[str, Any]:
    assert runtime.make_worker().run_once()
    data: dict[str, Any] = api.get(f"/api/v1/generations/{gid}").json()["data"]
    assert data["status"] == "success", data
    return data


def expected(record: dict[str, Any], image: dict[str, Any]) -> dict[str, str]:
    """The parameters as the API record shows them, in the files' text form."""
    return {
        "prompt": record["prompt"],
        "negativePrompt": record["negativePrompt"],
        "model": record["model"],
        "seed": str(image["seed"]),
        "steps": str(record["steps"]),
        "guidance": str(record["guidance"]),
        "size": f"{record['width']}x{record['height']}",
    }


def test_png_text_chunks_equal_the_api_record(api: Any, runtime: Any) -> None:
    gen = create(api, negativePrompt="blurry, ünïcödé ☃", seed=21, n=2, steps=3, guidance=5.5)
    record = run(api, runtime, gen["id"])
    assert record["recordParameters"] is True
    for image in record["outputImages"]:
        data = api.get(image["storageUrl"]).content
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            chunks = dict(im.text)  # type: ignore[attr-defined]
        assert DIGITAL_SOURCE_TYPE in chunks.pop(XMP_PNG_KEY)  # the provenance label, beside the parameters
        assert {k: chunks[k] for k in expected(record, image)} == expected(record, image)
        assert chunks["seed"] == str(21 + image["index"])
        assert chunks["parameters"].startswith(record["prompt"] + "\nNegative prompt: blurry")
        assert f"Seed: {image['seed']}, Size: 64x64, Model: tiny" in chunks["parameters"]
        assert read_params(data) == chunks


def test_same_parameters_same_bytes(api: Any, runtime: Any) -> None:
    a = run(api, runtime, create(api, seed=5)["id"])
    b = run(api, runtime, create(api, seed=5)["id"])
    assert a["outputImage"]["sha256"] == b["outputImage"]["sha256"]
    assert api.get(a["outputImage"]["storageUrl"]).content == api.get(b["outputImage"]["storageUrl"]).content


def test_opt_out_records_nothing_and_keeps_the_pixels(api: Any, runtime: Any) -> None:
    recorded = run(api, runtime, create(api, seed=9)["id"])
    bare = run(api, runtime, create(api, seed=9, recordParameters=False)["id"])
    assert bare["recordParameters"] is False
    data = api.get(bare["outputImage"]["storageUrl"]).content
    assert read_params(data) == {}
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert set(im.text) == {XMP_PNG_KEY}  # type: ignore[attr-defined]  # the label only: no parameters
        pixels = im.tobytes()
    with Image.open(io.BytesIO(api.get(recorded["outputImage"]["storageUrl"]).content)) as im:
        assert im.tobytes() == pixels
    assert bare["outputImage"]["fileSize"] < recorded["outputImage"]["fileSize"]


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_jpeg_and_webp_carry_them_in_exif(api: Any, runtime: Any, fmt: str) -> None:
    record = run(api, runtime, create(api, seed=3, outputFormat=fmt)["id"])
    data = api.get(record["outputImage"]["storageUrl"]).content
    params = read_params(data)
    want = {k: v for k, v in expected(record, record["outputImage"]).items() if v is not None}
    assert {k: params[k] for k in want} == want
    assert "negativePrompt" not in params and params["prompt"].startswith("a red circle")
    opted_out = run(api, runtime, create(api, seed=3, outputFormat=fmt, recordParameters=False)["id"])
    assert read_params(api.get(opted_out["outputImage"]["storageUrl"]).content) == {}


def test_a_project_can_opt_out(api: Any, runtime: Any) -> None:
    pid = runtime.default_project_id
    api.patch(f"/api/v1/admin/projects/{pid}", json={"budgetCredits": 1000})
    r = api.patch(f"/api/v1/admin/projects/{pid}", json={"recordParameters": False})
    assert r.status_code == 200 and r.json()["data"]["recordParameters"] is False
    assert r.json()["data"]["budgetCredits"] == 1000  # a PATCH keeps what it does not name
    bare = run(api, runtime, create(api, seed=9)["id"])  # the request did not opt out; the project did
    assert bare["recordParameters"] is False
    assert read_params(api.get(bare["outputImage"]["storageUrl"]).content) == {}
    api.patch(f"/api/v1/admin/projects/{pid}", json={"recordParameters": True})
    assert run(api, runtime, create(api, seed=9)["id"])["recordParameters"] is True
