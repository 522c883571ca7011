"""The diffusers entries' GPU options (domain/model_options.py, engine/backends/diffusers.py), on the CPU
where they run there: dtype, channels_last, attention_backend, vae_tiling_above, compile (traced by
dynamo with the eager backend: inductor's kernels take a minute to compile here), cpu_offload (a no-op
on the CPU); the catalog's checks of every option. docs/operations.md, "GPU options"."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from easel.domain.catalog import Catalog
from easel.domain.spec import GenerationSpec
from easel.engine.backends.base import BatchRequest, ModelUnavailable
from easel.engine.backends.diffusers import DiffusersBackend, attention_backends, torch_dtype
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings, load_catalog
from tiny import BATCH_MAX_LEVELS, build_tiny_flux, build_tiny_sd, tiny_entry

pytestmark = pytest.mark.slow

# name -> (tiny pipeline, family, options); each entry with load options has a copy of its own
ENTRIES = {
    "sd": ("sd", "sd", ""),
    "sd-fp32": ("sd-fp32", "sd", 'dtype = "fp32"'),
    "sd-bf16": ("sd-bf16", "sd", 'dtype = "bf16"'),
    "sd-fp16": ("sd-fp16", "sd", 'dtype = "fp16"'),
    "sd-old-fp32": ("sd-old", "sd", "fp16 = false"),
    "sd-cl": ("sd-cl", "sd", "channels_last = true"),
    "sd-tiled": ("sd", "sd", "vae_tiling_above = 32"),  # per call: may share the pipeline
    "sd-compiled": ("sd-compiled", "sd", 'compile = true, compile_backend = "eager"'),
    "sd-offload": ("sd-offload", "sd", 'cpu_offload = "model"'),
    "sd-attn": ("sd-attn", "sd", 'attention_backend = "native"'),
    "flux": ("flux", "flux-schnell", ""),
    "flux-native": ("flux-native", "flux-schnell", 'attention_backend = "native"'),
    "flux-flash": ("flux-flash", "flux-schnell", 'attention_backend = "flash"'),
    "flux-nope": ("flux-nope", "flux-schnell", 'attention_backend = "warp-drive"'),
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("gpu-options")
    build_tiny_sd(root / "sd")
    build_tiny_flux(root / "flux", guidance_embeds=False)
    text = ""
    for name, (folder, family, options) in ENTRIES.items():
        if not (root / folder).exists():
            shutil.copytree(root / ("flux" if family.startswith("flux") else "sd"), root / folder)
        extra = f"options = {{ {options} }}\n" if options else ""
        text += tiny_entry(name, folder, family, extra)
    (root / "catalog.toml").write_text(text)
    return load_catalog(root / "catalog.toml")


@pytest.fixture
def backend() -> DiffusersBackend:
    return DiffusersBackend(Settings(device="cpu"))


def request(catalog: Catalog, model: str, size: int = 32, seed: int = 3) -> BatchRequest:
    spec = GenerationSpec(prompt="a red circle", model=model, width=size, height=size)
    resolved = spec.resolve(catalog, seed=seed)
    return build_batch(catalog, catalog.resolve(model), [BatchPart(resolved)])


def pixels(backend: DiffusersBackend, req: BatchRequest) -> np.ndarray:
    [image] = backend.generate(req, lambda step, total: True)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def png(backend: DiffusersBackend, req: BatchRequest) -> bytes:
    from easel.domain.spec import OutputFormat
    from easel.imaging import encode

    [image] = backend.generate(req, lambda step, total: True)
    return encode(image, OutputFormat.PNG, None).data


def loaded(backend: DiffusersBackend, catalog: Catalog, model: str) -> object:
    req = request(catalog, model)
    return backend.pipeline(req.source, req.model.options, req.model.family)


# -- dtype --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "dtype"),
    [
        ("sd", torch.float32),  # auto on the CPU
        ("sd-fp32", torch.float32),
        ("sd-bf16", torch.bfloat16),
        ("sd-fp16", torch.float16),
        ("sd-old-fp32", torch.float32),  # the deprecated fp16 = false
    ],
)
def test_the_weights_are_loaded_in_the_entrys_dtype(
    catalog: Catalog, backend: DiffusersBackend, model: str, dtype: torch.dtype
) -> None:
    pipe = loaded(backend, catalog, model)
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        assert {p.dtype for p in module.parameters()} == {dtype}, name


def test_the_old_fp16_flag_still_loads_and_says_it_is_deprecated(
    catalog: Catalog, backend: DiffusersBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="easel.engine.backends.diffusers"):
        loaded(backend, catalog, "sd-old-fp32")
    assert 'options.fp16 is deprecated: use dtype (fp16 = false is dtype = "fp32")' in caplog.text


def test_auto_is_fp16_on_cuda_and_the_old_fp16_flag_reads_as_a_dtype(catalog: Catalog) -> None:
    options = catalog.resolve("sd").diffusers_options
    assert torch_dtype(options, "cuda") is torch.float16
    assert torch_dtype(options, "cuda:1") is torch.float16
    assert torch_dtype(options, "cpu") is torch.float32
    assert torch_dtype(options, "mps") is torch.float32
    assert torch_dtype(catalog.resolve("sd-old-fp32").diffusers_options, "cuda") is torch.float32
    assert torch_dtype(catalog.resolve("sd-bf16").diffusers_options, "cuda") is torch.bfloat16


def test_a_bf16_model_draws_on_the_cpu(catalog: Catalog, backend: DiffusersBackend) -> None:
    bf16 = pixels(backend, request(catalog, "sd-bf16"))
    assert bf16.shape == (32, 32, 3)
    assert np.array_equal(bf16, pixels(backend, request(catalog, "sd-bf16")))  # deterministic too
    # the same weights in fp32 draw nearly the same picture
    assert np.abs(bf16 - pixels(backend, request(catalog, "sd"))).mean() < 8


# -- channels_last --------------------------------------------------------------------------------------


def test_channels_last_puts_the_convolutions_in_channels_last_and_keeps_seeds_reproducible(
    catalog: Catalog, backend: DiffusersBackend
) -> None:
    def convs(pipe: object, fmt: torch.memory_format) -> list[bool]:
        weights = [
            m.weight
            for name in ("unet", "vae")
            for m in getattr(pipe, name).modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)  # 1x1: both formats at once
        ]
        assert len(weights) > 10
        return [w.is_contiguous(memory_format=fmt) and not w.is_contiguous() for w in weights]

    assert all(convs(loaded(backend, catalog, "sd-cl"), torch.channels_last))
    assert not any(convs(loaded(backend, catalog, "sd"), torch.channels_last))
    req = request(catalog, "sd-cl")
    assert png(backend, req) == png(backend, req)  # same seed -> same bytes, in channels-last too
    # and the same picture as the default memory format, up to kernel rounding
    diff = np.abs(pixels(backend, req) - pixels(backend, request(catalog, "sd")))
    assert diff.max() <= BATCH_MAX_LEVELS


# -- attention_backend ----------------------------------------------------------------------------------


def test_the_native_attention_backend_is_set_on_the_transformer_only(
    catalog: Catalog, backend: DiffusersBackend
) -> None:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    pipe = loaded(backend, catalog, "flux-native")
    assert attention_backends(pipe.transformer) == {"native"}
    assert (
        attention_backends(loaded(backend, catalog, "flux").transformer) == set()
    )  # another model: untouched
    assert _AttentionBackendRegistry._active_backend == before  # the process-wide default too
    native = pixels(backend, request(catalog, "flux-native"))
    assert np.array_equal(native, pixels(backend, request(catalog, "flux")))  # native = the default SDPA


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("flux-flash", r"attention_backend = 'flash' for FluxTransformer2DModel: .*flash-attn"),
        ("flux-nope", r"attention_backend = 'warp-drive' .*must be one of the following: .*native"),
        ("sd-attn", r"UNet2DConditionModel: its attention layers do not dispatch .*remove the option"),
    ],
)
def test_an_attention_backend_that_cannot_run_is_a_clear_load_error(
    catalog: Catalog, backend: DiffusersBackend, model: str, message: str
) -> None:
    with pytest.raises(ModelUnavailable, match=message):
        loaded(backend, catalog, model)
    assert backend._pipes == {}  # nothing half-configured stays loaded


# -- vae_tiling_above -----------------------------------------------------------------------------------


def test_vae_tiling_is_switched_per_call_by_the_sampled_size(
    catalog: Catalog, backend: DiffusersBackend
) -> None:
    vae = loaded(backend, catalog, "sd").vae  # "sd" and "sd-tiled" share this pipeline
    small = pixels(backend, request(catalog, "sd-tiled", size=32))  # 32 x 32 is not above 32²
    assert vae.use_tiling is False
    untiled = pixels(backend, request(catalog, "sd", size=64))
    assert vae.use_tiling is False
    tiled = pixels(backend, request(catalog, "sd-tiled", size=64))
    assert vae.use_tiling is True
    assert tiled.shape == untiled.shape == (64, 64, 3) and small.shape == (32, 32, 3)
    assert not np.array_equal(tiled, untiled)  # tiles were decoded (and blended) separately
    assert np.abs(tiled - untiled).mean() < 16  # ... into the same picture
    # an entry without the option never inherits the tiling of another that shares its pipeline
    assert np.array_equal(pixels(backend, request(catalog, "sd", size=64)), untiled)
    assert vae.use_tiling is False


# -- compile --------------------------------------------------------------------------------------------


def test_compile_wraps_the_denoiser_in_torch_compile(catalog: Catalog, backend: DiffusersBackend) -> None:
    compiled = loaded(backend, catalog, "sd-compiled")
    assert compiled.unet._compiled_call_impl is not None
    assert type(compiled.unet).__name__ == "UNet2DConditionModel"  # still itself: from_pipe, LoRAs
    assert loaded(backend, catalog, "sd").unet._compiled_call_impl is None
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    image = pixels(backend, request(catalog, "sd-compiled"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # dynamo traced the UNet
    assert np.abs(image - pixels(backend, request(catalog, "sd"))).max() <= BATCH_MAX_LEVELS


# -- cpu_offload -----------------------------------------------------------------------------------------


def test_cpu_offload_does_nothing_on_the_cpu_and_says_so(
    catalog: Catalog, backend: DiffusersBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="easel.engine.backends.diffusers"):
        pipe = loaded(backend, catalog, "sd-offload")
    assert "options.cpu_offload = 'model' does nothing on the CPU" in caplog.text
    assert not hasattr(pipe.unet, "_hf_hook")  # no accelerate offload hooks
    assert pipe.unet.device.type == "cpu"
    assert pixels(backend, request(catalog, "sd-offload")).shape == (32, 32, 3)


# -- the catalog's checks -----------------------------------------------------------------------------


def parse(options: str, extra: str = "") -> Catalog:
    text = f'[models.m]\nsource = "x"\noptions = {{ {options} }}\n{extra}'
    return Catalog.parse(text, base_dir=".")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            'dtype = "float16"',
            r"(?s)model 'm'.*options.dtype: must be one of auto, fp16, bf16, fp32 \(got 'float16'\)",
        ),
        ('compile = "fast"', r"(?s)model 'm'.*options.compile: must be false, true or a mode: default, "),
        ('compile = "true"', r"options.compile: must be false, true or a mode"),
        ("cpu_offload = true", r'options.cpu_offload: must be false, "model" or "sequential" \(got True\)'),
        ('vae_tiling_above = "1024"', r"options.vae_tiling_above: must be a whole number of pixels"),
        ("vae_tiling_above = 4", r"options.vae_tiling_above: must be a whole number of pixels .*at least 8"),
        ('channels_last = "yes"', r"options.channels_last: must be true or false"),
        ("attention_backend = 1", r"options.attention_backend: Input should be a valid string"),
        ("fp32 = true", r"options.fp32: unknown option \(the diffusers backend's options: enhance, config"),
        ('fp16 = false, dtype = "bf16"', r"fp16 is the old spelling of dtype: set only dtype"),
        (
            'compile = "max-autotune", compile_backend = "eager"',
            r"compile = 'max-autotune' is a mode of the inductor backend, not of compile_backend 'eager'",
        ),
    ],
)
def test_a_wrong_option_is_a_catalog_error_naming_the_entry(options: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(options)


def test_every_documented_option_parses() -> None:
    entry = parse(
        'dtype = "bf16", variant = "fp16", compile = "max-autotune", channels_last = true, '
        'attention_backend = "sage", vae_tiling_above = 1024, cpu_offload = "sequential", enhance = false'
    ).resolve("m")
    opts = entry.diffusers_options
    assert (opts.effective_dtype, opts.variant, opts.compile_mode, opts.channels_last) == (
        "bf16",
        "fp16",
        "max-autotune",
        True,
    )
    assert (opts.attention_backend, opts.vae_tiling_above, opts.cpu_offload, opts.enhance) == (
        "sage",
        1024,
        "sequential",
        False,
    )
    assert parse("compile = true").resolve("m").diffusers_options.compile_mode == "default"


def test_another_backends_options_are_its_own() -> None:
    text = '[models.m]\nsource = "x"\nbackend = "remote"\noptions = { dtype = "float16", url = "http://x" }\n'
    assert Catalog.parse(text, base_dir=".").resolve("m").options["url"] == "http://x"


def test_entries_sharing_a_source_must_agree_on_how_it_loads() -> None:
    shared = '[models.a]\nsource = "x"\noptions = { dtype = "bf16" }\n[models.b]\nsource = "x"\n'
    with pytest.raises(ValueError, match=r"models 'a' and 'b' share the source 'x'.*different options.dtype"):
        Catalog.parse(shared, base_dir=".")
    # per-call options may differ; the same dtype spelled two ways is the same
    fine = (
        '[models.a]\nsource = "x"\noptions = { fp16 = false, vae_tiling_above = 512, enhance = false }\n'
        '[models.b]\nsource = "x"\noptions = { dtype = "fp32" }\n'
        '[models.c]\nsource = "x"\nrevision = "abc"\noptions = { dtype = "bf16" }\n'  # another revision
    )
    assert len(Catalog.parse(fine, base_dir=".").models) == 3
