"""GenerationService.submit, the one way a generation is created: validate once, import the inputs,
persist the inputs and the job together, or leave nothing behind."""

from __future__ import annotations

from typing import Any

import pytest

from easel.domain.errors import QuotaExceeded, ValidationFailed
from easel.domain.families import Task
from easel.domain.inputs import ImageInput, MaskEncoding, Role
from easel.domain.keys import Principal
from easel.domain.pages import PageRequest
from easel.domain.sizes import closest_aspect_ratio
from easel.domain.spec import GenerationSpec
from helpers import png_bytes

INPAINT = GenerationSpec(prompt="x", task=Task.INPAINT)


def _stored(runtime: Any, pid: str) -> tuple[int, list[str]]:
    """(image rows of the project, blob keys under the project's folder)."""
    found = runtime.services.library.list(pid, folder=None, any_folder=True, page=PageRequest(limit=100))
    return found.total, runtime.blobs.keys(f"{pid}/")


def test_an_upload_and_its_job_are_stored_together(runtime: Any) -> None:
    principal = runtime.principal()
    source = ImageInput.upload(Role.SOURCE, png_bytes((64, 64)), "image")
    gen = runtime.generations.submit(
        principal, GenerationSpec(prompt="a red circle", task=Task.IMAGE_TO_IMAGE, size="64x64"), [source]
    )
    assert len(gen.spec.source_image_ids) == 1 and gen.spec.seed is not None
    img = runtime.services.library.get(principal.project_id, gen.spec.source_image_ids[0])
    assert (img.width, img.height, img.mime, img.generation_id) == (64, 64, "image/png", None)
    assert runtime.blobs.exists(img.storage_key)


def test_over_budget_leaves_no_upload_behind(runtime: Any) -> None:
    pid = runtime.default_project_id
    runtime.keys.set_project_limits(pid, budget_credits=1, rate_limit_per_hour=None)  # tiny costs 2
    source = ImageInput.upload(Role.SOURCE, png_bytes((64, 64)), "image")
    with pytest.raises(QuotaExceeded):
        runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="x", task=Task.IMAGE_TO_IMAGE), [source]
        )
    assert _stored(runtime, pid) == (0, [])
    assert runtime.generations.list(pid, _all()).total == 0


def test_a_key_budget_is_charged_through_the_principal(runtime: Any) -> None:
    pid = runtime.default_project_id
    _, key = runtime.keys.create(pid, "k", ["generations:write"], budget_credits=3)
    principal = Principal(pid, key.id, frozenset({"generations:write"}), 0, 3)
    runtime.generations.submit(principal, GenerationSpec(prompt="x"))  # 2 of 3 credits
    with pytest.raises(QuotaExceeded, match="this API key has 1 of its 3 left"):
        runtime.generations.submit(principal, GenerationSpec(prompt="x"))
    runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x"))  # the project has no budget


def test_the_spec_is_checked_before_any_input_is_read(runtime: Any) -> None:
    """An unknown model is refused before the (unroutable) URL is fetched or the bytes are decoded."""
    inputs = [
        ImageInput.from_url(Role.SOURCE, "http://10.255.255.1/never.png", "imageUrl"),
        ImageInput.upload(Role.MASK, b"not an image", "mask"),
    ]
    spec = GenerationSpec(prompt="x", model="no-such-model", task=Task.INPAINT)
    with pytest.raises(ValidationFailed) as info:
        runtime.generations.submit(runtime.principal(), spec, inputs)
    assert info.value.fields[0].field == "model"
    assert _stored(runtime, runtime.default_project_id) == (0, [])


def test_bad_bytes_are_refused_before_a_url_is_fetched_and_name_their_field(runtime: Any) -> None:
    inputs = [
        ImageInput.from_url(Role.SOURCE, "http://10.255.255.1/never.png", "imageUrl"),
        ImageInput.upload(Role.MASK, b"\x89PNG\r\n\x1a\nnot really", "maskFile"),
    ]
    with pytest.raises(ValidationFailed) as info:
        runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", task=Task.INPAINT), inputs)
    assert info.value.fields[0].field == "maskFile"  # the decoder, not the SSRF check, answered
    assert _stored(runtime, runtime.default_project_id) == (0, [])


def test_inputs_count_as_the_images_a_task_needs(runtime: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", task=Task.INPAINT), [])
    assert info.value.fields[0].field == "source_image_ids"  # canonical; dialects rename it
    two_masks = [
        ImageInput.upload(Role.SOURCE, png_bytes(), "image"),
        ImageInput.upload(Role.MASK, png_bytes(), "mask"),
        ImageInput.upload(Role.MASK, png_bytes(), "mask"),
    ]
    with pytest.raises(ValidationFailed, match="one mask at most"):
        runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="x", task=Task.INPAINT), two_masks
        )
    with pytest.raises(ValidationFailed) as info:
        missing = [ImageInput.stored(Role.SOURCE, "no-such-image", "sourceImageId")]
        runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="x", task=Task.IMAGE_TO_IMAGE), missing
        )
    assert info.value.fields[0].field == "sourceImageId"


def test_a_transparent_mask_becomes_a_white_mask_at_the_sources_size(runtime: Any) -> None:
    import io

    from PIL import Image

    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 64))  # left half transparent: repaint it
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    inputs = [
        ImageInput.upload(Role.SOURCE, png_bytes((64, 64)), "image"),
        ImageInput.upload(Role.MASK, buf.getvalue(), "mask", MaskEncoding.TRANSPARENT),
    ]
    gen = runtime.generations.submit(
        runtime.principal(), GenerationSpec(prompt="x", task=Task.INPAINT), inputs
    )
    record = runtime.services.library.get(runtime.default_project_id, gen.spec.mask_image_id)
    mask = Image.open(io.BytesIO(runtime.services.library.data(record)))
    assert mask.mode == "L" and mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0
    wrong = [inputs[0], ImageInput.upload(Role.MASK, png_bytes((64, 64)), "mask", MaskEncoding.TRANSPARENT)]
    with pytest.raises(ValidationFailed, match="alpha channel"):
        runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", task=Task.INPAINT), wrong)


def test_match_source_aspect_sizes_the_job_like_its_source(runtime: Any) -> None:
    source = ImageInput.upload(Role.SOURCE, png_bytes((200, 100)), "image")
    spec = GenerationSpec(prompt="x", task=Task.IMAGE_TO_IMAGE, match_source_aspect=True)
    gen = runtime.generations.submit(runtime.principal(), spec, [source])
    entry = runtime.catalog.resolve(None)
    assert gen.spec.aspect_ratio == closest_aspect_ratio(200, 100, entry.aspect_ratios)
    assert gen.spec.width > gen.spec.height


def _all() -> Any:
    from easel.domain.generation import ListQuery

    return ListQuery((), 100, 0, True)


class _FullDisk:
    """A BlobStore whose writes fail as on a full disk."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failing_store_is_a_503_storage_error_and_nothing_is_queued(
    runtime: Any, client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from easel.domain.errors import Unavailable

    monkeypatch.setattr(runtime.generations, "blobs", _FullDisk(runtime.blobs))
    source = ImageInput.upload(Role.SOURCE, png_bytes((64, 64)), "image")
    with pytest.raises(Unavailable) as info:
        runtime.generations.submit(
            runtime.principal(), GenerationSpec(prompt="x", task=Task.IMAGE_TO_IMAGE), [source]
        )
    assert info.value.status == 503 and info.value.code == "storage_error"
    assert "No space" not in info.value.message  # the cause is logged, not shown
    error_id = info.value.message.rsplit(" ", 1)[-1].rstrip(")")
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert runtime.generations.list(runtime.default_project_id, _all()).total == 0
    r = client.post(
        "/api/v1/generations",
        json={
            "prompt": "x",
            "sourceImageUrl": "data:image/png;base64," + __import__("base64").b64encode(png_bytes()).decode(),
        },
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_ERROR", r.text
