"""The OpenAI Images dialect (and AIGNE Hub's route) driven by the official `openai` SDK over real HTTP,
with an in-process worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from easel.api.openai.protocol import VARIATION_PROMPT
from easel.domain.generation import ListQuery
from helpers import ImageServer, open_image, png_bytes

# The OpenAI model names and presets this file's catalog adds to the shared test catalog (conftest's
# write_catalog): OpenAI's sizes and limits, on the tiny model drawn at 32 px and upscaled.
OPENAI_CATALOG = """
[styles.vivid]
prompt_suffix = "vivid saturated colors"
guidance = 6.0

[styles.natural]
prompt_suffix = "natural colors"
negative_prompt = "oversaturated"
guidance = 3.0

[qualities.auto]
[qualities.standard]
[qualities.low]
steps_multiplier = 0.5
[qualities.medium]
[qualities.high]
steps_multiplier = 1.5
[qualities.hd]
steps_multiplier = 2.0

[models.dall-e-2]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image", "inpaint", "variation"]
aspect_ratios = ["1:1"]
min_size = 256
max_size = 1024
max_n = 10
max_prompt_length = 1000
native_size = 32
credits_per_image = 1
styles = []
qualities = ["auto", "standard"]
options = {{ enhance = false }}

[models.dall-e-2.defaults]
steps = 2
guidance = 4.0
image_size = "medium"

[models.dall-e-3]
source = "{model_dir}"
tasks = ["text-to-image"]
aspect_ratios = ["1:1", "16:9", "9:16"]
min_size = 1024
max_size = 1792
max_n = 1
native_size = 32
credits_per_image = 2
styles = ["vivid", "natural"]
qualities = ["auto", "standard", "hd"]
options = {{ enhance = false }}

[models.dall-e-3.defaults]
steps = 2
guidance = 4.0
image_size = "medium"

[models.gpt-image-1]
source = "{model_dir}"
tasks = ["text-to-image", "image-to-image", "inpaint"]
aspect_ratios = ["1:1", "3:2", "2:3"]
min_size = 1024
max_size = 1536
native_size = 32
styles = []
qualities = ["auto", "low", "medium", "high"]
options = {{ enhance = false }}

[models.gpt-image-1.defaults]
steps = 2
image_size = "medium"

[models.broken]
source = "/nonexistent/easel-test-model"
"""


@pytest.fixture
def settings(settings, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """The shared test settings, with OpenAI's model names in the catalog (dall-e-2 moves off `tiny`),
    and image URLs on 127.0.0.1 allowed (the image-by-URL test serves one there)."""
    text = settings.catalog.read_text()
    moved = text.replace('aliases = ["dall-e-2", "tiny-alias"]', 'aliases = ["tiny-alias"]')
    assert moved != text, "conftest's catalog changed: update OPENAI_CATALOG"
    settings.catalog.write_text(moved + OPENAI_CATALOG.format(model_dir=tiny_model_dir))
    return settings.model_copy(update={"fetch_allow_hosts": ["127.0.0.1"]})


@pytest.fixture
def oai(live_server: str, admin_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=admin_key, max_retries=0)


@pytest.fixture
def headers(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def download(url: str) -> bytes:
    r = httpx.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return r.content


def native(base: str, key: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{base}/api/v1{path}", params=params, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def generation_id(resp: Any) -> str:
    extra = resp.model_extra or {}
    return str(extra["easel"]["generation_id"])


def stored(runtime, gid: str):  # type: ignore[no-untyped-def]
    return runtime.generations.get(runtime.default_project_id, gid)


def mask_png(size: tuple[int, int], transparent_box: tuple[int, int, int, int]) -> bytes:
    """An OpenAI mask: opaque everywhere except `transparent_box` (the area to edit)."""
    im = Image.new("RGBA", size, (0, 0, 0, 255))
    im.paste((0, 0, 0, 0), transparent_box)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


# -- generations ---------------------------------------------------------------------------------------


def test_generate_urls_download_images_of_the_declared_size(oai, live_server) -> None:
    resp = oai.images.generate(
        model="dall-e-2", prompt="a red circle", n=3, size="256x256", response_format="url"
    )
    assert len(resp.data or []) == 3
    assert resp.size == "256x256" and resp.output_format == "png"
    assert resp.usage is None  # Easel counts no tokens (docs/api/openai.md)
    pictures = []
    for item in resp.data or []:
        assert item.b64_json is None and item.revised_prompt is None and item.url
        assert "signature=" in item.url
        pic = open_image(download(item.url))
        assert pic.format == "PNG" and pic.size == (256, 256)
        pictures.append(pic.tobytes())
    assert len(set(pictures)) == 3


def test_generate_b64_json_and_the_native_api_reads_the_same_job(oai, live_server, admin_key) -> None:
    resp = oai.images.generate(prompt="a blue square", n=2, size="512x512", response_format="b64_json")
    blobs = [base64.b64decode(item.b64_json or "") for item in resp.data or []]
    assert [open_image(b).size for b in blobs] == [(512, 512), (512, 512)]
    gid = generation_id(resp)

    listed = native(live_server, admin_key, "/generations")["data"]
    assert [g["id"] for g in listed] == [gid]
    job = listed[0]
    assert job["status"] == "success" and job["model"] == "dall-e-2"  # OpenAI's default model
    assert [i["sha256"] for i in job["outputImages"]] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert resp.created == int(_epoch(job["createdAt"]))
    extra = resp.model_extra or {}
    assert extra["easel"]["credits"] == job["credits"] == 2
    assert extra["easel"]["seed"] == job["seed"]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_quality_and_style_map_through_the_catalog(oai, live_server, runtime) -> None:
    resp = oai.images.generate(
        model="dall-e-3",
        prompt="a green tree",
        size="1024x1792",
        quality="hd",
        style="natural",
        response_format="url",
    )
    item = (resp.data or [])[0]
    assert open_image(download(item.url or "")).size == (1024, 1792)
    assert resp.quality == "hd"
    spec = stored(runtime, generation_id(resp)).spec
    assert (spec.quality, spec.style, spec.steps, spec.guidance) == ("hd", "natural", 4, 3.0)
    assert spec.negative_prompt == "oversaturated"
    # The prompt the model ran differs from the client's: OpenAI calls it the revised prompt.
    assert spec.original_prompt == "a green tree" and spec.prompt == "a green tree, natural colors"
    assert item.revised_prompt == spec.prompt


def test_revised_prompt_when_the_prompt_was_enhanced(oai, runtime) -> None:
    resp = oai.images.generate(model="tiny", prompt="a red circle", size="64x64")
    spec = stored(runtime, generation_id(resp)).spec
    assert spec.prompt != "a red circle" and spec.prompt.startswith("a red circle")
    assert [i.revised_prompt for i in resp.data or []] == [spec.prompt]
    plain = oai.images.generate(
        model="tiny", prompt="a red circle", size="64x64", extra_body={"enhance": False}
    )
    assert (plain.data or [])[0].revised_prompt is None


def test_extensions_seed_negative_prompt_steps(oai, runtime) -> None:
    def make() -> Any:
        return oai.images.generate(
            prompt="a yellow star",
            size="256x256",
            response_format="b64_json",
            extra_body={"seed": 1234, "negative_prompt": "blurry", "steps": 3, "guidance": 2.5},
        )

    a, b = make(), make()
    assert (a.data or [])[0].b64_json == (b.data or [])[0].b64_json
    spec = stored(runtime, generation_id(a)).spec
    assert (spec.seed, spec.negative_prompt, spec.steps, spec.guidance) == (1234, "blurry", 3, 2.5)


def test_size_auto_and_omitted_use_the_model_default(oai) -> None:
    for kwargs in ({"size": "auto"}, {}):
        resp = oai.images.generate(model="gpt-image-1", prompt="a cat", **kwargs)
        assert resp.size == "1024x1024"
        assert open_image(base64.b64decode((resp.data or [])[0].b64_json or "")).size == (1024, 1024)


def test_gpt_image_models_always_answer_b64_json_on_openai_paths(oai, live_server, headers) -> None:
    resp = oai.images.generate(model="gpt-image-1", prompt="a cat")
    item = (resp.data or [])[0]
    assert item.b64_json and item.url is None
    with pytest.raises(openai.BadRequestError) as refused:
        oai.images.generate(model="gpt-image-1", prompt="a cat", response_format="url")
    assert refused.value.body["param"] == "response_format"  # type: ignore[index]
    # AIGNE Hub's route keeps its document's default: a link, for every model.
    r = httpx.post(
        f"{live_server}/api/images/generations",
        json={"model": "gpt-image-1", "prompt": "a cat"},
        headers=headers,
    )
    assert r.status_code == 200 and r.json()["data"][0]["url"]
    # dall-e models answer as asked, links by default.
    assert (oai.images.generate(model="dall-e-2", prompt="a cat", size="256x256").data or [])[0].url


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "1000x1001"}, "size"),
        ({"size": "banana"}, "size"),
        ({"size": "1792x1024"}, "size"),  # not a dall-e-2 size
        ({"model": "dall-e-3", "size": "512x512"}, "size"),
        ({"model": "dall-e-3", "n": 2}, "n"),
        ({"n": 11}, "n"),
        ({"n": 0}, "n"),
        ({"model": "nope"}, "model"),
        ({"style": "vivid"}, "style"),  # dall-e-2 has no styles, as at OpenAI
        ({"model": "dall-e-3", "quality": "ultra"}, "quality"),
        ({"response_format": "xml"}, "response_format"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "gif"}, "output_format"),
        ({"extra_body": {"bogus": 1}}, "bogus"),
        ({"extra_body": {"image": "not base64!"}}, "image"),
        ({"extra_body": {"image": "http://localhost:1/cat.png"}}, "image"),  # loopback: refused
    ],
)
def test_bad_generation_input_is_a_400_naming_the_param(oai, live_server, admin_key, kwargs, param) -> None:
    body = {"prompt": "a red circle"} | kwargs
    with pytest.raises(openai.BadRequestError) as exc:
        oai.images.generate(**body)
    err = exc.value
    assert err.status_code == 400 and err.param == param and err.type == "invalid_request_error"
    assert err.code == ("unknown_parameter" if param == "bogus" else "invalid_value")
    assert native(live_server, admin_key, "/generations")["pagination"]["total"] == 0


def test_missing_prompt_and_malformed_json(live_server, headers) -> None:
    r = httpx.post(f"{live_server}/v1/images/generations", json={"n": 1}, headers=headers)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Missing required parameter: 'prompt'.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "missing_required_parameter",
        }
    }
    r = httpx.post(
        f"{live_server}/v1/images/generations",
        content=b"{nope",
        headers=headers | {"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_failed_job_is_a_500_with_its_message(oai) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        oai.images.generate(model="broken", prompt="x", size="64x64")
    err = exc.value
    assert err.status_code == 500 and err.type == "server_error" and err.code == "model_unavailable"
    assert "does not exist" in err.message
    assert err.response.headers["x-should-retry"] == "false"


def test_a_generation_error_is_a_500_with_a_stable_message(
    live_server_no_worker, runtime, admin_key, caplog
) -> None:
    """The exception's text stays in the log, next to the error id the client gets."""
    import re
    import threading

    class Broken:
        def generate(self, request: Any, on_step: Any) -> Any:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, ...]]")

    worker = runtime.make_worker(backend=Broken())
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    client = openai.OpenAI(base_url=f"{live_server_no_worker}/v1", api_key=admin_key, max_retries=0)
    with caplog.at_level("ERROR", logger="easel.engine.worker"):
        thread.start()
        try:
            with pytest.raises(openai.InternalServerError) as exc:
                client.images.generate(prompt="x", size="256x256")
        finally:
            worker.stop()
            thread.join(30)
    err = exc.value
    assert err.status_code == 500 and err.type == "server_error" and err.code == "generation_failed"
    assert err.response.headers["x-should-retry"] == "false"
    message = err.response.json()["error"]["message"]
    m = re.fullmatch(r"The model failed to generate this image \(error id ([0-9a-f]{12})\)", message)
    assert m and "TextEncodeInput" not in err.response.text
    [logged] = [r for r in caplog.records if m.group(1) in r.getMessage()]
    assert logged.exc_info is not None and "TextEncodeInput must be Union" in caplog.text


def test_timeout_is_a_504_naming_the_job(live_server_no_worker, runtime, admin_key) -> None:
    runtime.settings.openai_timeout_seconds = 0.2
    client = openai.OpenAI(base_url=f"{live_server_no_worker}/v1", api_key=admin_key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:
        client.images.generate(prompt="x", size="256x256")
    err = exc.value
    assert err.status_code == 504 and err.code == "timeout" and err.type == "server_error"
    assert err.response.headers["x-should-retry"] == "false"
    [job] = native(live_server_no_worker, admin_key, "/generations")["data"]
    assert job["status"] == "pending" and job["id"] in err.message
    assert f"/api/v1/generations/{job['id']}" in err.message


# -- AIGNE Hub -------------------------------------------------------------------------------------------


def aigne_headers(key: str) -> dict[str, str]:
    """The document's headers, with a real key for YOUR_API_KEY."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


def test_aigne_basic_example(live_server, admin_key) -> None:
    r = httpx.post(
        f"{live_server}/api/images/generations",
        headers=aigne_headers(admin_key),
        content=b"""{
    "prompt": "A photorealistic image of a cat programming on a laptop",
    "n": 1,
    "size": "1024x1024"
}""",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 1
    [item] = body["data"]
    assert set(item) == {"url"}
    pic = open_image(download(item["url"]))
    assert pic.format == "PNG" and pic.size == (1024, 1024)
    [job] = native(live_server, admin_key, "/generations")["data"]
    assert job["model"] == "dall-e-2"  # the document's default model
    assert body["created"] == int(_epoch(job["createdAt"]))


def test_aigne_dall_e_3_base64_example(live_server, admin_key) -> None:
    r = httpx.post(
        f"{live_server}/api/images/generations",
        headers=aigne_headers(admin_key),
        content=b"""{
    "model": "dall-e-3",
    "prompt": "An oil painting of a futuristic city skyline at sunset, with flying cars",
    "n": 1,
    "size": "1792x1024",
    "quality": "hd",
    "style": "vivid",
    "response_format": "b64_json"
}""",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int)
    [item] = body["data"]
    assert "url" not in item
    data = base64.b64decode(item["b64_json"])
    pic = open_image(data)
    assert pic.format == "PNG" and pic.size == (1792, 1024)
    [job] = native(live_server, admin_key, "/generations")["data"]
    assert job["outputImage"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (job["model"], job["quality"], job["style"], job["steps"]) == ("dall-e-3", "hd", "vivid", 4)
    assert item["revised_prompt"] == job["prompt"] and job["prompt"].endswith("vivid saturated colors")


def test_aigne_image_field_takes_base64_data_uris_urls_and_own_links(live_server, runtime, admin_key) -> None:
    src = png_bytes((64, 64), (10, 200, 10))
    b64 = base64.b64encode(src).decode()
    files = ImageServer({"/field.png": (src, "image/png")})
    url = f"{live_server}/api/images/generations"
    try:
        for image in (b64, "data:image/png;base64," + b64, files.url("/field.png")):
            body = {"model": "gpt-image-1", "prompt": "a green field", "image": image}
            r = httpx.post(url, json=body, headers=aigne_headers(admin_key))
            assert r.status_code == 200, r.text
            spec = stored(runtime, r.json()["easel"]["generation_id"]).spec
            assert spec.task.value == "image-to-image" and len(spec.source_image_ids) == 1
            source = runtime.services.library.get(runtime.default_project_id, spec.source_image_ids[0])
            assert open_image(runtime.services.library.data(source)).getpixel((5, 5)) == (10, 200, 10)
    finally:
        files.close()
    # A link this server issued names one of its images: no fetch, that very image is the source.
    link = r.json()["data"][0]["url"]
    body = {"model": "gpt-image-1", "prompt": "again", "image": [link]}
    r = httpx.post(url, json=body, headers=aigne_headers(admin_key))
    assert r.status_code == 200, r.text
    sources = stored(runtime, r.json()["easel"]["generation_id"]).spec.source_image_ids
    assert sources == [link.split("/images/")[1].split("/")[0]]


# -- edits and variations --------------------------------------------------------------------------------


def test_edit_with_a_png_and_a_mask(oai, runtime) -> None:
    src = png_bytes((256, 256), (200, 30, 30))
    resp = oai.images.edit(
        image=("scene.png", src, "image/png"),
        mask=("mask.png", mask_png((256, 256), (0, 0, 128, 256)), "image/png"),
        prompt="a blue circle",
        n=2,
        size="256x256",
        response_format="url",
    )
    assert [open_image(download(i.url or "")).size for i in resp.data or []] == [(256, 256)] * 2
    spec = stored(runtime, generation_id(resp)).spec
    assert spec.task.value == "inpaint" and spec.mask_image_id and len(spec.source_image_ids) == 1
    svc, project = runtime.services.library, runtime.default_project_id
    mask = open_image(svc.data(svc.get(project, spec.mask_image_id)))
    # OpenAI's transparent area (left half) is Easel's white = repaint; the opaque rest is black.
    assert mask.mode == "L" and mask.getpixel((10, 100)) == 255 and mask.getpixel((200, 100)) == 0
    source = open_image(svc.data(svc.get(project, spec.source_image_ids[0])))
    assert source.getpixel((100, 100)) == (200, 30, 30)


def test_edit_without_mask_several_images_is_image_to_image(oai, runtime) -> None:
    resp = oai.images.edit(
        image=[("a.png", png_bytes((64, 64)), "image/png"), ("b.png", png_bytes((32, 32)), "image/png")],
        prompt="a red circle",
        model="gpt-image-1",
        size="1536x1024",
        input_fidelity="high",
    )
    assert open_image(base64.b64decode((resp.data or [])[0].b64_json or "")).size == (1536, 1024)
    spec = stored(runtime, generation_id(resp)).spec
    assert len(spec.source_image_ids) == 2 and spec.meta["input_fidelity"] == "high"  # recorded
    spec = stored(runtime, generation_id(resp)).spec
    assert spec.task.value == "image-to-image" and len(spec.source_image_ids) == 2


def test_variation(oai, runtime) -> None:
    resp = oai.images.create_variation(
        image=("a.png", png_bytes((128, 128), (30, 30, 200)), "image/png"), n=2, size="256x256"
    )
    assert [open_image(download(i.url or "")).size for i in resp.data or []] == [(256, 256)] * 2
    spec = stored(runtime, generation_id(resp)).spec
    assert spec.task.value == "variation" and spec.prompt == VARIATION_PROMPT and spec.n == 2


@pytest.mark.parametrize(
    ("case", "param"),
    [
        ("mask without alpha", "mask"),
        ("mask of another size", "mask"),
        ("not an image", "image"),
        ("model cannot edit", "model"),
        ("bad size", "size"),
    ],
)
def test_bad_edit_input_is_a_400_naming_the_param(oai, live_server, admin_key, case: str, param: str) -> None:
    image = ("a.png", png_bytes((64, 64)), "image/png")
    kwargs: dict[str, Any] = {"image": image, "prompt": "x", "size": "256x256"}
    if case == "mask without alpha":
        kwargs["mask"] = ("m.png", png_bytes((64, 64)), "image/png")
    elif case == "mask of another size":
        kwargs["mask"] = ("m.png", mask_png((32, 32), (0, 0, 16, 16)), "image/png")
    elif case == "not an image":
        kwargs["image"] = ("a.png", b"hello", "image/png")
    elif case == "model cannot edit":
        kwargs |= {"model": "dall-e-3", "size": "1024x1024"}
    else:
        kwargs["size"] = "7x7"
    with pytest.raises(openai.BadRequestError) as exc:
        oai.images.edit(**kwargs)
    assert exc.value.param == param, exc.value.message
    assert native(live_server, admin_key, "/generations")["pagination"]["total"] == 0


def test_edit_form_errors(live_server, headers) -> None:
    url = f"{live_server}/v1/images/edits"
    files = {"image": ("a.png", png_bytes(), "image/png")}
    r = httpx.post(url, files=files, data={"n": "2"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    assert r.json()["error"]["param"] == "prompt"
    r = httpx.post(url, files=files, data={"prompt": "x", "bogus": "1"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"
    mask = {"mask": ("m.png", mask_png((64, 64), (0, 0, 8, 8)), "image/png")}
    r = httpx.post(url, files=mask, data={"prompt": "x", "image": "not a file"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"
    r = httpx.post(url, json={"prompt": "x"}, headers=headers)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]


def test_variation_of_a_model_without_variations_is_a_400(oai) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        oai.images.create_variation(image=("a.png", png_bytes(), "image/png"), model="gpt-image-1")
    assert exc.value.param == "model"


# -- models ----------------------------------------------------------------------------------------------


def test_models_list_and_retrieve(oai) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"tiny", "tiny-alias", "dall-e-2", "dall-e-3", "gpt-image-1"} <= ids
    model = oai.models.retrieve("tiny-alias")
    assert model.id == "tiny-alias" and model.object == "model" and model.owned_by == "easel"
    assert (model.model_extra or {})["root"] == "tiny"
    with pytest.raises(openai.NotFoundError) as exc:
        oai.models.retrieve("nope")
    assert exc.value.code == "model_not_found"


# -- keys, limits and the catalog ------------------------------------------------------------------------


def sdk(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def test_scopes_rate_limits_and_budgets_in_openai_errors(live_server, runtime) -> None:
    project = runtime.default_project_id
    reader, _ = runtime.keys.create(project, "reader", ["generations:read"], rate_limit_per_hour=0)
    assert sdk(live_server, reader).models.retrieve("dall-e-2").id == "dall-e-2"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(live_server, reader).images.generate(prompt="x", size="256x256")
    assert denied.value.code == "forbidden" and "generations:write" in denied.value.message

    limited, _ = runtime.keys.create(project, "limited", ["generations:read"], rate_limit_per_hour=1)
    sdk(live_server, limited).models.list()
    with pytest.raises(openai.RateLimitError) as limit:
        sdk(live_server, limited).models.list()
    assert (limit.value.type, limit.value.code) == ("requests", "rate_limit_exceeded")
    assert int(limit.value.response.headers["retry-after"]) > 0

    poor, _ = runtime.keys.create(
        project, "poor", ["generations:write"], rate_limit_per_hour=0, budget_credits=1
    )
    with pytest.raises(openai.RateLimitError) as quota:  # OpenAI reports an exhausted quota as a 429
        sdk(live_server, poor).images.generate(prompt="x", n=2, size="256x256")
    assert (quota.value.type, quota.value.code) == ("insufficient_quota", "insufficient_quota")
    assert quota.value.response.headers["x-should-retry"] == "false"  # waiting refills no budget


def test_the_shipped_catalog_serves_openai_sizes() -> None:
    from easel.domain.errors import ValidationFailed
    from easel.domain.spec import GenerationSpec
    from easel.settings import load_catalog

    catalog = load_catalog(Path(__file__).parents[2] / "models" / "catalog.toml")
    accepted = {
        "dall-e-2": ["256x256", "512x512", "1024x1024", "auto", None],
        "dall-e-3": ["1024x1024", "1792x1024", "1024x1792", "auto", None],
        "gpt-image-1": ["1024x1024", "1536x1024", "1024x1536", "auto", None],
    }
    for model, sizes in accepted.items():
        for size in sizes:
            spec = GenerationSpec(prompt="x", model=model, size=size).resolve(catalog, seed=7)
            expected = size if size not in (None, "auto") else "1024x1024"
            assert f"{spec.width}x{spec.height}" == expected
    accepted |= {
        "gpt-image-1-mini": ["1024x1024", "1536x1024", "1024x1536", "auto", None],
        "gpt-image-1.5": ["1024x1024", "1536x1024", "1024x1536", "auto", None],
        # Any WxH of multiples of 16, 1:3 to 3:1, up to 3840x2160 pixels.
        "gpt-image-2": ["1024x1024", "3840x2160", "2160x3840", "1536x512", "1008x1792", "auto", None],
    }
    for model, sizes in accepted.items():
        for size in sizes:
            spec = GenerationSpec(prompt="x", model=model, size=size).resolve(catalog, seed=7)
            expected = size if size not in (None, "auto") else "1024x1024"
            assert f"{spec.width}x{spec.height}" == expected
    refused = [("dall-e-2", "1792x1024"), ("dall-e-3", "512x512"), ("dall-e-3", "1280x1024")]
    refused += [("gpt-image-1", "1792x1024"), ("gpt-image-1.5", "2048x2048")]
    refused += [("gpt-image-2", "1000x1000"), ("gpt-image-2", "3840x1024"), ("gpt-image-2", "3840x2176")]
    for model, size in refused:
        with pytest.raises(ValidationFailed) as exc:
            GenerationSpec(prompt="x", model=model, size=size).resolve(catalog, seed=7)
        assert exc.value.param == "size"
    dalle3 = GenerationSpec(prompt="x", model="dall-e-3", quality="hd", style="vivid").resolve(
        catalog, seed=7
    )
    assert dalle3.steps == 2 * catalog.models["dall-e-3"].defaults.steps and dalle3.prompt != "x"
    with pytest.raises(ValidationFailed):
        GenerationSpec(prompt="x", model="dall-e-2", style="vivid").resolve(catalog, seed=7)


# -- keys and idempotency ------------------------------------------------------------------------------


def test_a_bad_or_revoked_key_is_an_authentication_error(live_server, runtime) -> None:
    for key in ("sk-not-an-easel-key", "easel_sk_" + "A" * 48):
        client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as exc:
            client.images.generate(prompt="a red circle", size="256x256")
        assert exc.value.status_code == 401
    key, info = runtime.keys.create(runtime.default_project_id, "soon revoked", ["generations:write"])
    runtime.keys.revoke(info.id)
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(prompt="a red circle", size="256x256")


def test_idempotency_key_replays_the_first_response(oai, runtime) -> None:
    first = oai.images.generate(
        prompt="a red circle", size="256x256", extra_headers={"Idempotency-Key": "k1"}
    )
    again = oai.images.generate(
        prompt="a red circle", size="256x256", extra_headers={"Idempotency-Key": "k1"}
    )
    assert generation_id(first) == generation_id(again)
    assert first.data[0].url == again.data[0].url
    with pytest.raises(openai.UnprocessableEntityError):
        oai.images.generate(prompt="a blue star", size="256x256", extra_headers={"Idempotency-Key": "k1"})
    assert runtime.generations.list(runtime.default_project_id, ListQuery()).total == 1
