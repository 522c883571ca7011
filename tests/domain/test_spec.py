from __future__ import annotations

from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.domain.errors import ValidationFailed
from easel.domain.families import Task
from easel.domain.spec import GenerationSpec
from easel.settings import load_catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    from support import write_catalog

    return load_catalog(write_catalog(tmp_path / "c.toml", tmp_path))


def field_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> str:
    assert exc.value.status == 400
    return exc.value.fields[0].field


def test_resolve_fills_every_default(catalog: Catalog) -> None:
    spec = GenerationSpec(prompt="  a red circle ").resolve(catalog, seed=7)
    assert spec.model == "tiny"
    assert (spec.width, spec.height, spec.aspect_ratio) == (256, 256, "1:1")
    assert spec.steps == 4 and spec.guidance == 4.0
    assert spec.seed == 7  # drawn by the service and handed in: resolution is deterministic
    assert spec.prompt == "a red circle" and spec.original_prompt == "a red circle"
    assert spec.strength is None
    assert GenerationSpec(prompt="  a red circle ").resolve(catalog, seed=7) == spec
    assert GenerationSpec(prompt="x", seed=3).resolve(catalog, seed=7).seed == 3  # the request's wins
    with pytest.raises(ValueError, match="needs a seed"):
        GenerationSpec(prompt="x").resolve(catalog)


def test_alias_and_explicit_size(catalog: Catalog) -> None:
    spec = GenerationSpec(prompt="x", model="DALL-E-2", size="128x64", seed=3).resolve(catalog, seed=7)
    assert (spec.model, spec.width, spec.height, spec.aspect_ratio, spec.seed) == ("tiny", 128, 64, "2:1", 3)


def test_aspect_ratio_with_preset_is_capped_by_model(catalog: Catalog) -> None:
    spec = GenerationSpec(prompt="x", aspect_ratio="16:9", image_size="large").resolve(catalog, seed=7)
    assert (spec.width, spec.height) == (512, 288)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": "100x100"}, "size"),  # not a multiple of 8
        ({"size": "1024x1024"}, "size"),  # over max_size 512
        ({"size": "big"}, "size"),
        ({"width": 64}, "height"),
        ({"model": "nope"}, "model"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 201}, "prompt"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"model": "tiny-square", "aspect_ratio": "16:9"}, "aspect_ratio"),
        ({"model": "tiny-square", "size": "128x64"}, "size"),
        ({"image_size": "huge"}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"steps": 0}, "steps"),
        ({"guidance": 99}, "guidance"),
        ({"strength": 0}, "strength"),
        ({"task": Task.IMAGE_TO_IMAGE}, "source_image_ids"),
        ({"model": "tiny-square", "task": Task.INPAINT, "source_image_ids": ["a"]}, "task"),
        ({"style": "vivid"}, "style"),
    ],
)
def test_invalid_requests_name_the_field(catalog: Catalog, kwargs: dict, field: str) -> None:
    base = {"prompt": "a red circle"} | kwargs
    with pytest.raises(ValidationFailed) as exc:
        GenerationSpec(**base).resolve(catalog, seed=7)
    assert field_of(exc) == field


def test_errors_use_the_dialects_names(catalog: Catalog) -> None:
    with pytest.raises(ValidationFailed) as exc:
        GenerationSpec(prompt="x", aspect_ratio="7:3").resolve(catalog, seed=7)
    assert field_of(exc) == "aspect_ratio"  # services name canonical fields ...
    renamed = exc.value.renamed({"aspect_ratio": "aspectRatio"})  # ... each dialect renders its own
    assert renamed.fields[0].field == "aspectRatio" and renamed.message.startswith("aspectRatio: ")
    assert exc.value.fields[0].field == "aspect_ratio"  # the original is unchanged
    assert "1:1" in exc.value.fields[0].message  # allowed values are listed


def test_unknown_model_lists_allowed(catalog: Catalog) -> None:
    with pytest.raises(ValidationFailed) as exc:
        GenerationSpec(prompt="x", model="sdxl").resolve(catalog, seed=7)
    assert "tiny" in exc.value.message and "tiny-square" in exc.value.message


def test_batch_key_ignores_prompt_seed_and_n(catalog: Catalog) -> None:
    a = GenerationSpec(prompt="a", seed=1, n=1).resolve(catalog, seed=7)
    b = GenerationSpec(prompt="b", seed=2, n=3, negative_prompt="z").resolve(catalog, seed=7)
    c = GenerationSpec(prompt="a", seed=1, size="64x64").resolve(catalog, seed=7)
    assert a.batch_key == b.batch_key != c.batch_key


@pytest.fixture
def styled(tmp_path: Path) -> Catalog:
    path = tmp_path / "s.toml"
    path.write_text(
        '[styles.vivid]\nprompt_suffix = "vivid colors"\nnegative_prompt = "dull"\nguidance = 9.0\n'
        "[styles.plain]\n"
        "[qualities.hd]\nsteps_multiplier = 2.0\nguidance = 5.0\n[qualities.fast]\nsteps = 1\n"
        '[models.m]\nsource = "x"\n[models.m.defaults]\nsteps = 10\nguidance = 3.0\n'
        '[models.only-plain]\nsource = "x"\nstyles = ["plain"]\nqualities = []\n'
    )
    return load_catalog(path)


def test_style_adds_words_negative_and_guidance(styled: Catalog) -> None:
    spec = GenerationSpec(prompt="a cat", style="vivid", negative_prompt="blurry").resolve(styled, seed=7)
    assert spec.prompt == "a cat, vivid colors" and spec.original_prompt == "a cat"
    assert spec.negative_prompt == "blurry, dull" and spec.guidance == 9.0


def test_quality_scales_steps_and_explicit_values_win(styled: Catalog) -> None:
    assert GenerationSpec(prompt="x", quality="hd").resolve(styled, seed=7).steps == 20
    assert GenerationSpec(prompt="x", quality="fast").resolve(styled, seed=7).steps == 1
    explicit = GenerationSpec(prompt="x", quality="hd", style="vivid", steps=7, guidance=2.0).resolve(
        styled, seed=7
    )
    assert (explicit.steps, explicit.guidance) == (7, 2.0)
    assert GenerationSpec(prompt="x", quality="hd", style="vivid").resolve(styled, seed=7).guidance == 5.0


def test_models_restrict_presets(styled: Catalog) -> None:
    for kwargs, field in (({"style": "vivid"}, "style"), ({"quality": "hd"}, "quality")):
        with pytest.raises(ValidationFailed) as exc:
            GenerationSpec(prompt="x", model="only-plain", **kwargs).resolve(styled, seed=7)
        assert field_of(exc) == field
    assert GenerationSpec(prompt="x", model="only-plain", style="plain").resolve(styled, seed=7).prompt == "x"


def test_unknown_preset_names_in_a_model_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[models.m]\nsource = "x"\nstyles = ["nope"]\n')
    with pytest.raises(ValueError, match="unknown style presets"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a red circle", None),
        ("tab\tand\nnewlines\r\n", None),
        ("ünïcödé 日本 🎨", None),
        ("a \ud800 b", "lone surrogate"),
        ("a \udc00 b", "lone surrogate"),
        ("bell \x07", "U+0007"),
        ("nul \x00", "U+0000"),
        ("del \x7f", "U+007F"),
        ("next line \x85", "U+0085"),
    ],
)
def test_prompt_text_rules(text: str, problem: str | None) -> None:
    from easel.domain.spec import text_problem

    found = text_problem(text)
    assert (found is None) if problem is None else (found is not None and problem in found)
