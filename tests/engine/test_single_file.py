"""Single-file checkpoints: a tiny pipeline of each family, written back in its original single-file
layout (tests/single_file_layouts.py), loads through Easel's catalog and loader and draws the same image
as the diffusers folder it came from; what a catalog or a file gets wrong is a clear error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from easel.domain.catalog import SINGLE_FILE_FAMILIES, Catalog
from easel.domain.spec import GenerationSpec
from easel.engine.backends.base import ModelUnavailable
from easel.engine.batch import BatchPart, build_batch
from easel.engine.sources import detect_family
from easel.settings import Settings, load_catalog


@dataclass(frozen=True)
class Made:
    family: str
    folder: Path  # the diffusers pipeline
    file: Path  # the same weights as one original-layout checkpoint
    config: Path  # the folder without the weights the file holds


def _make(root: Path, family: str) -> Made:
    """Build the family's tiny pipeline, write its single file and its config folder next to it."""
    import functools

    import torch
    from diffusers import DiffusionPipeline

    import single_file_layouts as layouts
    from tiny import build_tiny_flux, build_tiny_sd, build_tiny_sd3, build_tiny_sdxl

    # SDXL's and SD3's second CLIP encoder wider than the first: a file's encoders are told by width
    builders: dict[str, tuple[Any, Any, tuple[str, ...]]] = {
        "sd": (build_tiny_sd, layouts.sd_checkpoint, ()),
        "sdxl": (functools.partial(build_tiny_sdxl, clip_g_width=24), layouts.sdxl_checkpoint, ()),
        "sd3": (functools.partial(build_tiny_sd3, clip_g_width=24), layouts.sd3_checkpoint, ()),
        # a FLUX.1 file is the transformer alone: the folder keeps the VAE's and encoders' weights
        "flux": (build_tiny_flux, None, ("vae", "text_encoder", "text_encoder_2")),
    }
    build, convert, keep = builders[family]
    folder = build(root / family)
    with torch.no_grad():
        pipe = DiffusionPipeline.from_pretrained(str(folder))
        tensors = layouts.flux_to_bfl(pipe.transformer) if convert is None else convert(pipe)
    file = layouts.save_checkpoint(tensors, root / f"{family}.safetensors")
    config = layouts.config_folder(folder, root / f"{family}-config", keep_weights=keep)
    return Made(family, folder, file, config)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("single-file")


@pytest.fixture(scope="module")
def made(root: Path) -> Callable[[str], Made]:
    """A family's tiny pipeline, its file and config folder, built once for the module when first asked."""
    cache: dict[str, Made] = {}

    def get(family: str) -> Made:
        if family not in cache:
            cache[family] = _make(root, family)
        return cache[family]

    return get


def catalog_text(m: Made) -> str:
    """The folder and the file as two entries, with paths relative to the catalog (its folder: root)."""
    t5 = "max_sequence_length = 32\n" if m.family in ("sd3", "flux") else ""
    return f"""
default_model = "folder"

[models.folder]
source = "{m.folder.name}"
{t5}
[models.folder.defaults]
steps = 2

[models.file]
source = "{m.file.name}"
family = "{m.family}"
{t5}
[models.file.options]
config = "{m.config.name}"

[models.file.defaults]
steps = 2
"""


def within_bound(a: np.ndarray, b: np.ndarray) -> bool:
    """The same image: at most 2 levels apart on at most 2% of the pixels (float rounding)."""
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=-1)
    return bool(diff.max() <= 2 and (diff > 0).mean() <= 0.02)


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_a_single_file_draws_what_its_diffusers_folder_draws(
    root: Path, made: Callable[[str], Made], family: str
) -> None:
    from easel.engine.backends.diffusers import DiffusersBackend

    m = made(family)
    path = root / f"{family}.toml"
    path.write_text(catalog_text(m))
    settings = Settings(data_dir=root / "data", catalog=path, device="cpu")
    catalog = load_catalog(path)
    assert catalog.models["folder"].family == catalog.models["file"].family == family
    backend = DiffusersBackend(settings)
    images = []
    for name in ("folder", "file"):
        entry = catalog.resolve(name)
        spec = GenerationSpec(model=name, prompt="a red circle", size="64x64", seed=7, n=2)
        request = build_batch(catalog, entry, [BatchPart(spec.resolve(catalog, seed=7))])
        images.append([np.asarray(im.convert("RGB")) for im in backend.generate(request, lambda i, n: True)])
    assert backend.calls == 2 and len(backend._pipes) == 2  # two pipelines, one of them from the file
    single = backend._pipes[(str(m.file), None)]
    assert type(single).__name__ == type(backend._pipes[(str(m.folder), None)]).__name__
    for from_folder, from_file in zip(*images, strict=True):
        assert from_folder.shape == (64, 64, 3)
        assert within_bound(from_folder, from_file)
    assert not np.array_equal(images[0][0], images[0][1])  # two seeds, two pictures: not a blank image


def test_options_config_is_resolved_against_the_catalog_folder(
    root: Path, made: Callable[[str], Made]
) -> None:
    m = made("sd")
    catalog = Catalog.parse(catalog_text(m), base_dir=str(root), probe=detect_family)
    entry = catalog.resolve("file")
    request = build_batch(catalog, entry, [BatchPart(GenerationSpec(prompt="x"))])
    assert request.source == str(root / m.file.name)
    assert request.model.options["config"] == str(root / m.config.name)
    assert entry.options["config"] == m.config.name  # the catalog's entry itself is unchanged
    folder = catalog.resolve("folder")
    assert build_batch(catalog, folder, [BatchPart(GenerationSpec(prompt="x"))]).model is folder


def _entry(body: str) -> str:
    return f'[models.ckpt]\nsource = "models/realistic.safetensors"\n{body}\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[models.ckpt.options]\nconfig = "x"', r"(?s)model 'ckpt'.*single-file checkpoint.*set `family`"),
        (
            'family = "pixart-sigma"\n[models.ckpt.options]\nconfig = "x"',
            r"(?s)model 'ckpt'.*family pixart-sigma has no single-file loader",
        ),
        ('family = "sdxl"', r"(?s)model 'ckpt'.*set options.config to a local diffusers-format folder"),
    ],
    ids=["no-family", "pixart", "no-config"],
)
def test_catalog_errors_name_the_entry(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Catalog.parse(_entry(body), base_dir=str(tmp_path), origin="c.toml", probe=detect_family)


def test_a_ckpt_file_needs_a_family_too(tmp_path: Path) -> None:
    text = '[models.old]\nsource = "v1-5-pruned.CKPT"\n[models.old.options]\nconfig = "sd15"\n'
    with pytest.raises(ValueError, match=r"(?s)model 'old'.*set `family`"):
        Catalog.parse(text, base_dir=str(tmp_path))


def test_the_engine_loads_every_family_the_catalog_accepts() -> None:
    from easel.engine.backends import single_file

    assert set(single_file.FAMILIES) == set(SINGLE_FILE_FAMILIES)


def test_loading_errors_say_what_to_do(root: Path, made: Callable[[str], Made]) -> None:
    from easel.engine.backends.diffusers import load_pipeline

    sd, sdxl = made("sd"), made("sdxl")
    with pytest.raises(ModelUnavailable, match=r"nope\.safetensors' does not exist"):
        load_pipeline(str(root / "nope.safetensors"), "cpu", {"config": str(sd.config)}, "sd")
    with pytest.raises(ModelUnavailable, match=r"options.config folder '.*missing' does not exist"):
        load_pipeline(str(sd.file), "cpu", {"config": str(root / "missing")}, "sd")
    with pytest.raises(ModelUnavailable, match=r"has no model_index\.json"):
        load_pipeline(str(sd.file), "cpu", {"config": str(sd.config / "unet")}, "sd")
    with pytest.raises(ModelUnavailable, match="set `family`"):
        load_pipeline(str(sd.file), "cpu", {"config": str(sd.config)}, None)
    with pytest.raises(ModelUnavailable, match="family pixart-sigma has no single-file loader"):
        load_pipeline(str(sd.file), "cpu", {"config": str(sd.config)}, "pixart-sigma")
    # an SD 1.x file with an SDXL folder: diffusers' error, and what to check
    with pytest.raises(
        ModelUnavailable, match=r"cannot load single file sd\.safetensors as family sdxl.*Check"
    ):
        load_pipeline(str(sd.file), "cpu", {"config": str(sdxl.config)}, "sdxl")
