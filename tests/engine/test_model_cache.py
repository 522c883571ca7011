"""The loaded-model cache bounded by memory (engine/backends/cache.py, EASEL_MODEL_MEMORY): the LRU
policy, the budget, the estimate read from the safetensors headers, and DiffusersBackend evicting
tiny pipelines of different sizes before it loads the next one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.domain.model_options import parse_options
from easel.domain.spec import GenerationSpec
from easel.engine.backends import cache as cache_module
from easel.engine.backends import diffusers as diffusers_module
from easel.engine.backends.cache import PipelineCache, budget_bytes, estimate_bytes
from easel.engine.backends.diffusers import DiffusersBackend, pipeline_bytes
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings, load_catalog, parse_memory
from tiny import build_tiny_flux, build_tiny_sd, build_tiny_sdxl, tiny_entry

# -- the policy, without torch ------------------------------------------------------------------------


def test_a_budget_for_two_evicts_the_least_recently_used_on_the_third() -> None:
    cache: PipelineCache[str, str] = PipelineCache(budget=100)
    assert cache.put("a", "A", 40) == [] and cache.put("b", "B", 50) == []
    assert cache.put("c", "C", 30) == [("a", "A")]
    assert list(cache.items) == ["b", "c"] and cache.used == 80


def test_a_touched_value_stays() -> None:
    cache: PipelineCache[str, str] = PipelineCache(budget=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 50)
    assert cache.get("a") == "A"  # now b is the least recently used
    assert cache.put("c", "C", 30) == [("b", "B")]
    assert list(cache.items) == ["a", "c"]


def test_room_is_made_before_a_load_for_its_estimate() -> None:
    cache: PipelineCache[str, str] = PipelineCache(budget=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 50)
    assert cache.make_room(55) == [("a", "A"), ("b", "B")]  # 50 + 55 > 100 too
    cache.put("a", "A", 40)
    assert cache.make_room(None) == []  # an unknown estimate evicts nothing before the load
    assert cache.make_room(60) == []  # exactly the budget fits
    assert cache.make_room(61) == [("a", "A")]


def test_a_value_larger_than_the_budget_stays_alone_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cache: PipelineCache[str, str] = PipelineCache(budget=100)
    cache.put("a", "A", 40)
    with caplog.at_level(logging.WARNING, logger="easel.engine.backends.cache"):
        assert cache.put("huge", "H", 250) == [("a", "A")]
    assert list(cache.items) == ["huge"]
    assert (
        "needs 0.00 GB, more than the model cache's budget" in caplog.text and "loaded alone" in caplog.text
    )
    assert cache.put("a", "A", 40) == [("huge", "H")]


def test_the_count_cap_applies_on_top_and_no_budget_is_no_byte_bound() -> None:
    cache: PipelineCache[str, str] = PipelineCache(budget=None, max_count=2)
    cache.put("a", "A", 10**12)
    cache.put("b", "B", 10**12)
    assert cache.put("c", "C", 1) == [("a", "A")]
    both: PipelineCache[str, str] = PipelineCache(budget=100, max_count=3)
    for k in "abc":
        both.put(k, k.upper(), 10)
    assert both.put("d", "D", 10) == [("a", "A")]  # the count, not the bytes


@pytest.mark.parametrize(
    ("setting", "device", "memory", "budget"),
    [
        ("24GiB", "cuda", 10**9, 24 * 2**30),  # bytes are bytes, whatever the device has
        ("16GB", "cpu", None, 16 * 10**9),
        ("60%", "cuda:1", 80 * 10**9, 48 * 10**9),
        ("auto", "cuda:1", 80 * 10**9, 64 * 10**9),  # 80 % of a GPU
        ("auto", "mps", 10 * 10**9, 8 * 10**9),
        ("auto", "cpu", 32 * 10**9, 16 * 10**9),  # 50 % of the RAM
        ("auto", "cuda", None, None),  # cannot be told: no byte bound
    ],
)
def test_the_budget(setting: str, device: str, memory: int | None, budget: int | None) -> None:
    asked: list[str] = []

    def fake(d: str) -> int | None:
        asked.append(d)
        return memory

    assert budget_bytes(setting, device, fake) == budget
    if parse_memory(setting) is None or isinstance(parse_memory(setting), float):
        assert asked == [device]  # the memory of the worker's own device


def test_the_budget_setting_is_checked_at_start() -> None:
    assert Settings(model_memory="512MiB").model_memory == "512MiB"
    for bad in ("lots", "0", "120%", "-1GB", "24 GiBs"):
        with pytest.raises(ValueError, match="model_memory"):
            Settings(model_memory=bad)


def test_the_ram_of_this_machine_is_its_memory() -> None:
    from easel.engine.devices import device_memory, system_memory

    ram = system_memory()
    assert ram is not None and ram > 10**8
    assert device_memory("cpu") == ram
    assert budget_bytes("auto", "cpu") == ram // 2


# -- tiny pipelines of different sizes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("cache")
    build_tiny_sd(root / "sd")
    build_tiny_sdxl(root / "sdxl")
    build_tiny_flux(root / "flux")
    text = "".join(tiny_entry(name, name, name) for name in ("sd", "sdxl", "flux"))
    text += tiny_entry("flux-bf16", "flux-bf16", "flux", 'options = { dtype = "bf16" }\n')
    (root / "flux-bf16").symlink_to(root / "flux")
    (root / "catalog.toml").write_text(text)
    return load_catalog(root / "catalog.toml")


def source(catalog: Catalog, model: str) -> str:
    return str(Path(catalog.base_dir) / catalog.resolve(model).source)


def sizes(catalog: Catalog) -> dict[str, int]:
    out = {}
    for m in ("sd", "sdxl", "flux"):
        size = estimate_bytes(source(catalog, m), None, parse_options({}), "cpu")
        assert size is not None
        out[m] = size
    return out


def test_the_estimate_is_the_loaded_weights_within_two_percent(catalog: Catalog) -> None:
    from easel.engine.backends.diffusers import load_pipeline

    for m in ("sd", "sdxl", "flux", "flux-bf16"):
        entry = catalog.resolve(m)
        estimate = estimate_bytes(source(catalog, m), None, entry.diffusers_options, "cpu")
        measured = pipeline_bytes(load_pipeline(source(catalog, m), "cpu", entry.options))
        assert estimate is not None and measured is not None
        assert abs(estimate - measured) <= 0.02 * measured, (m, estimate, measured)
    fp32 = estimate_bytes(source(catalog, "flux"), None, parse_options({}), "cpu")
    bf16 = estimate_bytes(source(catalog, "flux"), None, parse_options({"dtype": "bf16"}), "cpu")
    assert fp32 is not None and bf16 is not None and abs(fp32 - 2 * bf16) <= 0.01 * fp32
    # auto is fp16 on CUDA: half the bytes of the fp32 files
    assert estimate_bytes(source(catalog, "flux"), None, parse_options({}), "cuda") == bf16
    assert estimate_bytes("owner/not-downloaded", None, parse_options({}), "cpu") is None


def generate(backend: DiffusersBackend, catalog: Catalog, model: str) -> None:
    spec = GenerationSpec(prompt="a red circle", model=model, width=16, height=16).resolve(catalog, seed=1)
    images = backend.generate(
        build_batch(catalog, catalog.resolve(model), [BatchPart(spec)]), lambda s, t: True
    )
    assert images[0].size == (16, 16)


def loaded_models(backend: DiffusersBackend, catalog: Catalog) -> list[str]:
    names = {source(catalog, m): m for m in ("sd", "sdxl", "flux")}
    return [names[src] for src, _rev in backend._pipes]


def test_the_backend_unloads_the_least_recently_used_before_loading_what_does_not_fit(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = sizes(catalog)
    assert len(set(size.values())) == 3  # three different sizes
    small, *large = sorted(size.values())
    budget = sum(large) + small // 2  # any two fit, all three do not (a margin for the estimates)
    backend = DiffusersBackend(Settings(device="cpu", model_memory=str(budget)))
    held_at_load: list[list[str]] = []
    real = diffusers_module.load_pipeline

    def spy(*args: object, **kwargs: object) -> object:
        held_at_load.append(loaded_models(backend, catalog))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(diffusers_module, "load_pipeline", spy)
    generate(backend, catalog, "sd")
    generate(backend, catalog, "sdxl")
    assert loaded_models(backend, catalog) == ["sd", "sdxl"]
    generate(backend, catalog, "flux")  # sd, the least recently used, leaves
    assert loaded_models(backend, catalog) == ["sdxl", "flux"]
    assert held_at_load[-1] == ["sdxl"]  # ... before flux was loaded: never all three at once
    generate(backend, catalog, "sdxl")  # touched: now flux is the older one
    generate(backend, catalog, "sd")
    assert loaded_models(backend, catalog) == ["sdxl", "sd"]
    assert len(held_at_load) == 4  # sdxl was not loaded again
    assert backend.cache.used <= budget
    reported = {item.source: item.memory_bytes for item in backend.loaded()}
    assert reported == {
        source(catalog, m): backend.cache.sizes[(source(catalog, m), None)] for m in ("sdxl", "sd")
    }


def test_a_model_larger_than_the_budget_loads_alone(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    backend = DiffusersBackend(Settings(device="cpu", model_memory=str(min(sizes(catalog).values()) // 2)))
    generate(backend, catalog, "sd")
    with caplog.at_level(logging.WARNING, logger=cache_module.__name__):
        generate(backend, catalog, "flux")
    assert loaded_models(backend, catalog) == ["flux"]
    assert "more than the model cache's budget" in caplog.text


def test_the_count_cap_still_works_and_unload_frees_the_bytes(catalog: Catalog) -> None:
    backend = DiffusersBackend(Settings(device="cpu", max_loaded_models=1))
    generate(backend, catalog, "sd")
    generate(backend, catalog, "sdxl")
    assert loaded_models(backend, catalog) == ["sdxl"]
    entry = catalog.resolve("sdxl").model_copy(update={"source": source(catalog, "sdxl")})
    assert backend.unload(entry) is True
    assert backend._pipes == {} and backend.cache.used == 0
