"""The output check (docs/policy.md, "Outputs"): the perceptual hash sees the same picture through
re-encoding, resizing and a slight recolour, and tells different pictures apart; the blocklist check is
named in the settings and run by the GPU worker before anything is stored (the gateway's run is in
tests/gateway); a refused job fails `output_rejected` with nothing stored."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance

from easel.domain.spec import GenerationSpec
from easel.service.output_checks import distance, load_output_check, phash


def scene(shift: int = 0) -> Image.Image:
    image = Image.new("RGB", (128, 96), (20, 40, 160))
    image.paste((250, 220, 30), (10 + shift, 10, 60 + shift, 50))
    image.paste((200, 30, 30), (70, 40, 120, 90))
    return image


def test_the_hash_sees_the_same_picture_and_tells_others_apart() -> None:
    original = phash(scene())
    buf = io.BytesIO()
    scene().save(buf, "JPEG", quality=60)
    assert distance(original, phash(Image.open(io.BytesIO(buf.getvalue())))) <= 4
    assert distance(original, phash(scene().resize((320, 240)))) <= 4
    assert distance(original, phash(ImageEnhance.Color(scene()).enhance(0.8))) <= 4
    other = Image.new("RGB", (128, 96), (240, 240, 240))
    other.paste((0, 0, 0), (0, 48, 128, 96))
    assert distance(original, phash(other)) > 12


def test_a_named_check_that_does_not_load_says_why(settings: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="module:function"):
        load_output_check(settings.model_copy(update={"output_check": "no-colon"}))
    blocklist = "easel.service.output_checks:phash_blocklist"
    with pytest.raises(ValueError, match="EASEL_OUTPUT_BLOCKLIST_DIR"):
        load_output_check(settings.model_copy(update={"output_check": blocklist}))
    with pytest.raises(ValueError, match="holds no PNG"):
        load_output_check(
            settings.model_copy(update={"output_check": blocklist, "output_blocklist_dir": tmp_path})
        )
    assert load_output_check(settings) is None


def test_the_worker_refuses_a_blocklisted_output_and_stores_nothing(settings: Any, tmp_path: Path) -> None:
    from easel.domain.generation import Status
    from easel.runtime import Runtime

    def run(rt: Any, seed: int) -> Any:
        gen = rt.generations.submit(
            rt.principal(), GenerationSpec(prompt="a red circle", size="64x64", seed=seed)
        )
        worker = rt.make_worker()
        while worker.run_once():
            pass
        return rt.repo.get_generation(rt.default_project_id, gen.id)

    plain = Runtime.build(settings)
    try:
        first = run(plain, 3)
        assert first.status is Status.SUCCEEDED
        data = plain.blobs.get(first.images[0].storage_key)
    finally:
        plain.close()
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "seed3.png").write_bytes(data)
    checked = Runtime.build(
        settings.model_copy(
            update={
                "output_check": "easel.service.output_checks:phash_blocklist",
                "output_blocklist_dir": tmp_path / "blocked",
            }
        )
    )
    try:
        again = run(checked, 3)
        assert again.status is Status.FAILED and again.error_code == "output_rejected", again.error_message
        assert "seed3.png" in (again.error_message or "") and again.images == []
        other = run(checked, 123456)
        assert other.status is Status.SUCCEEDED, other.error_message
    finally:
        checked.close()
