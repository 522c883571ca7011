"""Model families: detection from a pipeline's files, what a family fills into a catalog entry, and the
requests refused before anything is queued because the model's family cannot do them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.domain.errors import ValidationFailed
from easel.domain.families import FAMILIES, Guidance, Task, family_for_pipeline
from easel.domain.spec import GenerationSpec, LoraRef
from easel.engine.sources import detect_family
from easel.settings import load_catalog

CATALOG = """
default_model = "sd"

[models.sd]
source = "x"
family = "sd"

[models.sdxl]
source = "x"
family = "sdxl"
[models.sdxl.defaults]
steps = 12

[models.dev]
source = "x"
family = "flux"

[models.dev-true-cfg]
source = "x"
family = "flux"
true_cfg_scale = 4.0

[models.schnell]
source = "x"
family = "flux-schnell"

[models.pixart]
source = "x"
family = "pixart-sigma"

[models.unknown]
source = "x"

[styles.soft]
prompt_suffix = "soft light"
negative_prompt = "harsh"
guidance = 3.0

[loras.ink]
source = "ink.safetensors"
families = ["sd", "sdxl"]
scale = 0.7
trigger_words = ["inkstyle"]
credits_per_image = 0.5

[loras.flux-detail]
source = "detail"
families = ["flux"]
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.parse(CATALOG, base_dir="/nowhere")


def resolve(catalog: Catalog, **fields: object) -> GenerationSpec:
    return GenerationSpec(prompt="a red circle", **fields).resolve(catalog, seed=1)  # type: ignore[arg-type]


def refused(catalog: Catalog, field: str, **fields: object) -> str:
    with pytest.raises(ValidationFailed) as info:
        resolve(catalog, **fields)
    assert [e.field for e in info.value.fields] == [field]
    return str(info.value)


def test_pipeline_class_names_tell_the_family() -> None:
    assert family_for_pipeline("StableDiffusionPipeline") == "sd"
    assert family_for_pipeline("StableDiffusionXLImg2ImgPipeline") == "sdxl"
    assert family_for_pipeline("StableDiffusion3Pipeline") == "sd3"
    assert family_for_pipeline("FluxPipeline", guidance_embeds=True) == "flux"
    assert family_for_pipeline("FluxPipeline", guidance_embeds=False) == "flux-schnell"
    assert family_for_pipeline("FluxPipeline") == "flux"
    assert family_for_pipeline("PixArtSigmaPipeline") == "pixart-sigma"
    assert family_for_pipeline("SomeNewPipeline") is None
    # every pipeline class belongs to one family
    names = [p for f in FAMILIES.values() for p in f.pipelines]
    assert len(names) == len(set(names))


def test_detect_family_reads_model_index_and_the_transformer_config(tmp_path: Path) -> None:
    def folder(name: str, class_name: str, guidance_embeds: bool | None = None) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
        if guidance_embeds is not None:
            (tmp_path / name / "transformer").mkdir()
            (tmp_path / name / "transformer" / "config.json").write_text(
                json.dumps({"guidance_embeds": guidance_embeds})
            )

    folder("xl", "StableDiffusionXLPipeline")
    folder("dev", "FluxPipeline", guidance_embeds=True)
    folder("schnell", "FluxPipeline", guidance_embeds=False)
    folder("odd", "SomeNewPipeline")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    (tmp_path / "single.safetensors").write_bytes(b"")
    path = tmp_path / "catalog.toml"
    path.write_text(
        "".join(f'[models.{n}]\nsource = "{n}"\n' for n in ("xl", "dev", "schnell", "odd", "broken", "gone"))
        + '[models.single]\nsource = "single.safetensors"\nfamily = "sd"\noptions.config = "xl"\n'
        + '[models.set]\nsource = "xl"\nfamily = "sd"\n'  # an explicit family wins over the files
    )
    cat = load_catalog(path)
    assert {n: m.family for n, m in cat.models.items()} == {
        "xl": "sdxl",
        "dev": "flux",
        "schnell": "flux-schnell",
        "odd": None,
        "broken": None,
        "gone": None,  # a hub id that is not in the local cache
        "single": "sd",
        "set": "sd",
    }
    entry = cat.models["xl"]
    assert detect_family(entry.model_copy(update={"backend": "other"}), str(tmp_path)) is None


def test_a_family_fills_tasks_multiple_and_defaults(catalog: Catalog) -> None:
    sd, sdxl, pixart, schnell = (catalog.models[n] for n in ("sd", "sdxl", "pixart", "schnell"))
    assert sd.tasks == list(FAMILIES["sd"].tasks)
    assert pixart.tasks == [Task.TEXT_TO_IMAGE]
    assert catalog.models["dev"].multiple_of == 16 and sd.multiple_of == 8
    assert (sd.defaults.steps, sd.defaults.guidance) == (30, 7.5)
    assert (sdxl.defaults.steps, sdxl.defaults.guidance) == (
        12,
        5.0,
    )  # the entry's steps, the family's guidance
    assert (schnell.defaults.steps, schnell.defaults.guidance) == (4, 0.0)
    assert schnell.guidance_kind is Guidance.NONE
    assert catalog.models["unknown"].family is None and catalog.models["unknown"].guidance_kind is None
    described = catalog.describe(catalog.models["dev-true-cfg"])
    assert described["family"] == "flux" and described["familyLabel"].startswith("FLUX.1 [dev]")
    assert described["parameters"] == {
        "negativePrompt": True,
        "guidance": "embedded",
        "trueCfgScale": 4.0,
        "maxSequenceLength": 512,
        "loras": True,
        "nativeResolution": 1024,
    }
    assert described["loras"] == ["flux-detail"]
    assert catalog.describe(sd)["loras"] == ["ink"]
    assert catalog.describe(pixart)["parameters"]["loras"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('family = "sdxl-turbo"', "unknown family"),
        ('family = "pixart-sigma"\ntasks = ["inpaint"]', "no pipeline for"),
        ('family = "flux"\nmultiple_of = 8', "multiple of 16"),
        ('family = "sdxl"\ntrue_cfg_scale = 3.0', "true_cfg_scale is for FLUX.1"),
        ('family = "sdxl"\nmax_sequence_length = 128', "no max_sequence_length"),
        ('family = "flux-schnell"\n[models.m.defaults]\nguidance = 3.5', "takes no guidance"),
    ],
)
def test_an_entry_that_does_not_fit_its_family_is_a_catalog_error(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Catalog.parse(f'[models.m]\nsource = "x"\n{body}\n', base_dir="/nowhere")
    assert "model 'm'" in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('families = ["sd4"]', "unknown families"),
        ('families = ["pixart-sigma"]', "cannot load LoRA"),
        ("families = []", "families"),
        ('families = ["sd"]\nscale = 9', "scale"),
    ],
)
def test_a_bad_lora_entry_is_a_catalog_error(body: str, message: str) -> None:
    text = f'[models.m]\nsource = "x"\n[loras.l]\nsource = "l"\n{body}\n'
    with pytest.raises(ValueError, match=message) as info:
        Catalog.parse(text, base_dir="/nowhere")
    assert "lora 'l'" in str(info.value)


def test_a_negative_prompt_is_refused_where_the_family_has_none(catalog: Catalog) -> None:
    message = refused(catalog, "negative_prompt", model="dev", negative_prompt="blurry")
    assert "FLUX.1 [dev]" in message and "true_cfg_scale" in message
    refused(catalog, "negative_prompt", model="schnell", negative_prompt="blurry")
    for model in ("sd", "sdxl", "pixart", "dev-true-cfg", "unknown"):
        assert resolve(catalog, model=model, negative_prompt="blurry").negative_prompt == "blurry"
    assert resolve(catalog, model="dev", negative_prompt="").negative_prompt is None  # empty asks nothing


def test_guidance_is_refused_where_there_is_none(catalog: Catalog) -> None:
    assert "takes no guidance" in refused(catalog, "guidance", model="schnell", guidance=3.5)
    assert refused(catalog, "guidance", model="schnell", guidance=0.0)
    assert resolve(catalog, model="schnell").guidance == 0.0
    assert resolve(catalog, model="dev", guidance=2.0).guidance == 2.0  # embedded guidance is a guidance


def test_a_style_applies_as_far_as_the_family_can_use_it(catalog: Catalog) -> None:
    sd = resolve(catalog, model="sd", style="soft")
    assert (sd.negative_prompt, sd.guidance) == ("harsh", 3.0)
    schnell = resolve(catalog, model="schnell", style="soft")
    assert (schnell.prompt, schnell.negative_prompt, schnell.guidance) == (
        "a red circle, soft light",
        None,
        0.0,
    )
    dev = resolve(catalog, model="dev", style="soft")
    assert (dev.negative_prompt, dev.guidance) == (None, 3.0)


def test_tasks_the_family_has_no_pipeline_for_are_refused(catalog: Catalog) -> None:
    message = refused(
        catalog, "task", model="pixart", task=Task.INPAINT, source_image_ids=["a"], mask_image_id="b"
    )
    assert "does not support inpaint" in message and "text-to-image" in message


def test_sizes_follow_the_family_multiple(catalog: Catalog) -> None:
    assert "multiple of 16" in refused(catalog, "size", model="dev", width=520, height=512)
    assert resolve(catalog, model="sd", width=520, height=512).width == 520


def test_loras_resolve_with_scales_trigger_words_and_a_batch_key(catalog: Catalog) -> None:
    plain = resolve(catalog, model="sdxl")
    spec = resolve(catalog, model="sdxl", loras=[LoraRef(name="INK")])
    assert spec.loras == [LoraRef(name="ink", scale=0.7)]  # canonical name, the catalog's scale
    assert spec.prompt == "a red circle, inkstyle"  # the trigger word, once
    with_word = GenerationSpec(prompt="InkStyle circle", model="sdxl", loras=[LoraRef(name="ink")])
    assert with_word.resolve(catalog, seed=1).prompt == "InkStyle circle"
    half = resolve(catalog, model="sdxl", loras=[LoraRef(name="ink", scale=0.5)])
    zero = resolve(catalog, model="sdxl", loras=[LoraRef(name="ink", scale=0.0)])
    keys = {plain.batch_key, spec.batch_key, half.batch_key, zero.batch_key}
    assert len(keys) == 4  # another adapter set or scale is another pipeline call
    assert catalog.credits_per_image(catalog.models["sdxl"], [r.name for r in spec.loras]) == 1.5


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ([LoraRef(name="nope")], "unknown LoRA 'nope'; for model sd: ink"),
        ([LoraRef(name="flux-detail")], "is for flux, not model sd"),
        ([LoraRef(name="ink"), LoraRef(name="Ink")], "named twice"),
        ([LoraRef(name="ink", scale=5.0)], "between -4 and 4"),
        ([LoraRef(name="ink")] * 5, "at most 4"),
    ],
)
def test_bad_lora_refs_name_the_field(catalog: Catalog, loras: list[LoraRef], message: str) -> None:
    assert message in refused(catalog, "loras", model="sd", loras=loras)


def test_a_lora_needs_a_known_family(catalog: Catalog) -> None:
    assert "unknown family" in refused(catalog, "loras", model="unknown", loras=[LoraRef(name="ink")])
