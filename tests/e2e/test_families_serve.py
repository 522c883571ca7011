"""The model families through `easel serve`, on SQLite and on PostgreSQL: a tiny pipeline of each family
in the catalog, text-to-image / image-to-image / inpainting where the family has them, through the
native API and the OpenAI dialect (the official SDK), with and without two LoRAs; and the requests a
family cannot do, refused with a 400 in each dialect's shape before anything is queued."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from easel.domain.families import FAMILIES as FAMILY_TABLE
from easel.domain.families import Task
from helpers import open_image, png_bytes
from pg_support import BACKENDS, fresh_database
from processes import easel_env, start_serve
from tiny import FAMILY_BUILDERS, build_tiny_lora, tiny_entry

pytestmark = pytest.mark.slow

SIZE = 32
FAMILIES = ["sd", "sdxl", "sd3", "flux", "pixart-sigma"]
EDIT_FAMILIES = [f for f in FAMILIES if Task.INPAINT in FAMILY_TABLE[f].tasks]
LORA_FAMILIES = [f for f in FAMILIES if FAMILY_TABLE[f].loras]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipelines, two LoRAs for each LoRA family, and a catalog of them all."""
    root = tmp_path_factory.mktemp("families-serve")
    text = 'default_model = "sd"\n'
    for family in FAMILIES:
        FAMILY_BUILDERS[family](root / family)
        text += tiny_entry(family, family, family, "credits_per_image = 1\n")
    for family in LORA_FAMILIES:
        for n, seed in (("a", 1), ("b", 2)):
            build_tiny_lora(root / family, root / f"lora-{family}-{n}", family, seed)
            text += f'[loras.{family}-{n}]\nsource = "lora-{family}-{n}"\nfamilies = ["{family}"]\n'
            text += "credits_per_image = 0.25\n"
    (root / "catalog.toml").write_text(text)
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """`easel serve` (with its worker) on this database; its URL and admin key headers."""
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    pg_url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with fresh_database(request.param, folder, pg_url) as db:
        env = easel_env(
            data_dir=str(folder / "data"),
            database_url=db,
            catalog=str(models / "catalog.toml"),
            secret_key="test-secret",
            max_loaded_models="8",
        )
        proc, url = start_serve(env, folder / "serve.log")
        try:
            key = (folder / "data" / "admin-key.txt").read_text().strip()
            yield url, {"Authorization": f"Bearer {key}"}
        finally:
            proc.stop(60)


def create(server: tuple[str, dict[str, str]], **body: Any) -> httpx.Response:
    url, headers = server
    return httpx.post(f"{url}/api/v1/generations", json={"autoEnhance": False, **body}, headers=headers)


def finish(server: tuple[str, dict[str, str]], gid: str) -> dict[str, Any]:
    url, headers = server
    deadline = time.monotonic() + 120
    while True:
        data: dict[str, Any] = httpx.get(f"{url}/api/v1/generations/{gid}", headers=headers).json()["data"]
        if data["status"] in ("success", "failed", "canceled"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.1)


def image_bytes(data: dict[str, Any]) -> bytes:
    assert data["status"] == "success", data
    return httpx.get(data["outputImage"]["storageUrl"]).content


def data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def mask_png(transparent: bool = False) -> bytes:
    """A square in the middle marked for repainting: white on black, or (OpenAI) transparent."""
    if transparent:
        im = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
        im.paste((0, 0, 0, 0), (8, 8, 24, 24))
    else:
        im = Image.new("L", (SIZE, SIZE), 0)
        im.paste(255, (8, 8, 24, 24))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def sdk(server: tuple[str, dict[str, str]]) -> openai.OpenAI:
    url, headers = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key=headers["Authorization"].removeprefix("Bearer "))


@pytest.mark.parametrize("family", FAMILIES)
def test_native_text_to_image_is_deterministic_and_loras_change_it(
    server: tuple[str, dict[str, str]], family: str
) -> None:
    common = {"prompt": "a red circle", "model": family, "size": f"{SIZE}x{SIZE}", "seed": 11}
    jobs = [create(server, **common), create(server, **common)]
    if family in LORA_FAMILIES:
        loras = [{"name": f"{family}-a", "scale": 0.9}, {"name": f"{family}-b", "scale": 0.6}]
        jobs.append(create(server, **common, loras=loras))
    for r in jobs:
        assert r.status_code == 201, r.text
    done = [finish(server, r.json()["data"]["id"]) for r in jobs]
    plain, again = image_bytes(done[0]), image_bytes(done[1])
    assert plain == again  # same seed, same bytes, whichever batch each ran in
    assert open_image(plain).size == (SIZE, SIZE)
    if family in LORA_FAMILIES:
        assert image_bytes(done[2]) != plain
        assert [(lo["name"], lo["scale"]) for lo in done[2]["loras"]] == [
            (f"{family}-a", 0.9),
            (f"{family}-b", 0.6),
        ]
        assert done[2]["credits"] == 1.5 and done[0]["credits"] == 1


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_native_image_to_image_and_inpainting(server: tuple[str, dict[str, str]], family: str) -> None:
    source = png_bytes((SIZE, SIZE), (200, 40, 40))
    common = {
        "prompt": "a blue square",
        "model": family,
        "seed": 5,
        "size": f"{SIZE}x{SIZE}",
        "sourceImageUrl": data_uri(source),
    }
    i2i = create(server, **common, strength=0.7)
    inpaint = create(server, **common, maskImageUrl=data_uri(mask_png()))
    assert i2i.status_code == 201 and inpaint.status_code == 201, (i2i.text, inpaint.text)
    assert inpaint.json()["data"]["task"] == "inpaint"
    edited = open_image(image_bytes(finish(server, i2i.json()["data"]["id"])))
    painted = open_image(image_bytes(finish(server, inpaint.json()["data"]["id"]))).convert("RGB")
    assert edited.size == painted.size == (SIZE, SIZE)
    assert painted.getpixel((1, 1)) == (200, 40, 40)  # outside the mask: the source, exactly
    assert painted.getpixel((16, 16)) != (200, 40, 40)


@pytest.mark.parametrize("family", FAMILIES)
def test_openai_generate_and_edit(server: tuple[str, dict[str, str]], family: str) -> None:
    client = sdk(server)
    extra: dict[str, Any] = {"seed": 3}
    if family in LORA_FAMILIES:
        extra["loras"] = [{"name": f"{family}-a"}, {"name": f"{family}-b", "scale": 0.5}]
    result = client.images.generate(
        model=family,
        prompt="a green star",
        size=f"{SIZE}x{SIZE}",
        response_format="b64_json",
        extra_body=extra,
    )
    assert result.data and result.data[0].b64_json
    assert open_image(base64.b64decode(result.data[0].b64_json)).size == (SIZE, SIZE)
    edit = lambda: client.images.edit(  # noqa: E731
        model=family,
        prompt="a yellow sun",
        image=("s.png", png_bytes((SIZE, SIZE)), "image/png"),
        mask=("m.png", mask_png(transparent=True), "image/png"),
        size=f"{SIZE}x{SIZE}",  # type: ignore[arg-type]
        response_format="b64_json",
    )
    if family in EDIT_FAMILIES:
        edited = edit()
        assert edited.data and edited.data[0].b64_json
    else:
        with pytest.raises(openai.BadRequestError) as info:
            edit()
        assert info.value.body["param"] == "task" or "inpaint" in info.value.body["message"]  # type: ignore[index]


def test_what_a_family_cannot_do_is_a_400_in_each_dialect(server: tuple[str, dict[str, str]]) -> None:
    url, headers = server

    def total() -> int:
        return int(httpx.get(f"{url}/api/v1/generations", headers=headers).json()["pagination"]["total"])

    before = total()
    r = create(server, prompt="x", model="flux", negativePrompt="blurry")
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "negativePrompt", r.text
    r = create(server, prompt="x", model="pixart-sigma", sourceImageUrl=data_uri(png_bytes((SIZE, SIZE))))
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "task", r.text
    r = create(server, prompt="x", model="sd3", loras=[{"name": "sd-a"}])
    assert r.status_code == 400 and r.json()["error"]["fields"][0]["field"] == "loras", r.text
    r = create(server, prompt="x", model="sd", loras=[{"name": "flux-a"}])
    assert r.status_code == 400 and "is for flux" in r.text, r.text
    client = sdk(server)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="flux", prompt="x", extra_body={"negative_prompt": "blurry"})
    assert info.value.body["param"] == "negative_prompt"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="sd", prompt="x", extra_body={"loras": [{"name": "nope"}]})
    assert info.value.body["param"] == "loras"  # type: ignore[index]
    assert total() == before  # refused before anything was queued


def test_models_show_family_and_parameters(server: tuple[str, dict[str, str]]) -> None:
    url, headers = server
    models = {m["id"]: m for m in httpx.get(f"{url}/api/v1/models", headers=headers).json()["data"]}
    assert {m: models[m]["family"] for m in FAMILIES} == {m: m for m in FAMILIES}
    assert models["flux"]["parameters"]["negativePrompt"] is False
    assert models["flux"]["parameters"]["guidance"] == "embedded"
    assert models["sdxl"]["loras"] == ["sdxl-a", "sdxl-b"]
    assert models["pixart-sigma"]["tasks"] == ["text-to-image"]
