"""LoRA references of a request against the catalog: what they resolve to, the batch key they make (exact
scales; hashed when long), the credits they cost, and the adapters a batch gets (engine/batch.py).
Refusals by name, family, duplicates and scale are in tests/domain/test_families.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.domain.spec import MAX_BATCH_KEY, GenerationSpec, LoraRef
from easel.engine.backends.base import Adapter
from easel.engine.batch import BatchPart, adapters, build_batch

CATALOG = """
default_model = "sd"

[models.sd]
source = "x"
family = "sd"
credits_per_image = 2

[loras.ink]
source = "loras/ink.safetensors"
families = ["sd", "sdxl"]
scale = 0.7
trigger_words = ["inkstyle", "lineart"]
credits_per_image = 0.5

[loras.detail]
source = "loras/detail"
weight_name = "detail_v2.safetensors"
families = ["sd"]
credits_per_image = 0.25

[loras.hub]
source = "someone/a-lora"
families = ["sd"]
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "loras" / "detail").mkdir(parents=True)
    (tmp_path / "loras" / "ink.safetensors").write_bytes(b"")
    return Catalog.parse(CATALOG, base_dir=str(tmp_path))


def resolve(catalog: Catalog, *loras: LoraRef, prompt: str = "a red circle") -> GenerationSpec:
    return GenerationSpec(prompt=prompt, model="sd", loras=list(loras)).resolve(catalog, seed=1)


def test_refs_resolve_to_catalog_names_scales_and_trigger_words(catalog: Catalog) -> None:
    spec = resolve(catalog, LoraRef(name="Ink"), LoraRef(name="detail", scale=-0.5))
    assert spec.loras == [LoraRef(name="ink", scale=0.7), LoraRef(name="detail", scale=-0.5)]
    assert spec.prompt == "a red circle, inkstyle, lineart"
    assert resolve(catalog, LoraRef(name="ink"), prompt="LineArt of a cat").prompt == (
        "LineArt of a cat, inkstyle"
    )
    assert spec.original_prompt == "a red circle"  # what the client asked, without trigger words
    assert resolve(catalog, LoraRef(name="hub", scale=0)).loras == [LoraRef(name="hub", scale=0.0)]


def test_the_batch_key_holds_the_exact_adapter_set_and_scales(catalog: Catalog) -> None:
    def key(*loras: LoraRef) -> str:
        return resolve(catalog, *loras).batch_key

    plain = key()
    assert plain == resolve(catalog).batch_key
    close = [key(LoraRef(name="ink", scale=s)) for s in (0.1234567, 0.1234568, 0.12345671)]
    assert len(set(close)) == 3  # rounded labels (0.123457) would batch them together
    assert key(LoraRef(name="ink", scale=0.7)) == key(LoraRef(name="ink"))  # the default is a scale
    both = key(LoraRef(name="ink"), LoraRef(name="detail"))
    assert len({plain, key(LoraRef(name="ink")), key(LoraRef(name="detail")), both}) == 4
    assert "ink:0.7,detail:1.0" in both


def test_a_long_batch_key_is_hashed_to_fit_its_column() -> None:
    names = [f"lora-with-a-very-long-descriptive-name-number-{i:02d}-" + "x" * 60 for i in range(4)]
    text = 'default_model = "sd"\n[models.sd]\nsource = "x"\nfamily = "sd"\n'
    for name in names:
        text += f'[loras.{name}]\nsource = "l"\nfamilies = ["sd"]\n'
    catalog = Catalog.parse(text, base_dir="/nowhere")
    keys = set()
    for scale in (0.5, 0.25):
        loras = [LoraRef(name=n, scale=scale) for n in names]
        spec = GenerationSpec(prompt="x", model="sd", loras=loras).resolve(catalog, seed=1)
        assert len(spec.batch_key) <= MAX_BATCH_KEY and "|sha256:" in spec.batch_key
        assert spec.batch_key == spec.model_copy().batch_key  # stable
        keys.add(spec.batch_key)
    assert len(keys) == 2  # the start is the same, the hash of the whole is not
    assert (
        "|sha256:" not in resolve(Catalog.parse(CATALOG, base_dir="/nowhere"), LoraRef(name="ink")).batch_key
    )


def test_credits_count_each_lora(catalog: Catalog) -> None:
    sd = catalog.models["sd"]
    assert catalog.credits_per_image(sd) == 2
    assert catalog.credits_per_image(sd, ["ink", "detail"]) == 2.75
    assert catalog.credits_per_image(sd, ["INK"]) == 2.5  # case-insensitive, like the request
    assert catalog.describe(sd)["loras"] == ["detail", "hub", "ink"]
    assert catalog.loras["ink"].public()["creditsPerImage"] == 0.5


def test_a_batch_gets_each_lora_with_its_resolved_source_and_scale(catalog: Catalog, tmp_path: Path) -> None:
    spec = resolve(catalog, LoraRef(name="ink", scale=0.9), LoraRef(name="detail"), LoraRef(name="hub"))
    assert adapters(catalog, spec) == (
        Adapter("ink", str(tmp_path / "loras" / "ink.safetensors"), None, 0.9),
        Adapter("detail", str(tmp_path / "loras" / "detail"), "detail_v2.safetensors", 1.0),
        Adapter("hub", "someone/a-lora", None, 1.0),  # not a local path: a hub id
    )
    batch = build_batch(catalog, catalog.models["sd"], [BatchPart(spec), BatchPart(spec)])
    assert batch.loras == adapters(catalog, spec) and len(batch.items) == 2
    assert build_batch(catalog, catalog.models["sd"], [BatchPart(resolve(catalog))]).loras == ()
