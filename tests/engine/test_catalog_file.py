"""engine/catalog_file.py: an entry appended to the catalog file, validated as a whole, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from easel.engine.catalog_file import (
    CatalogFileError,
    add_model,
    catalog_path_for,
    check_new_name,
    default_name,
    entry_text,
)
from easel.settings import load_catalog

CATALOG = """# hand-written, keep me
default_model = "a"

[models.a]
source = "somewhere"
aliases = ["alpha"]

[models.a.defaults]
steps = 3
"""


def test_an_entry_is_appended_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    path.chmod(0o640)
    fields = {"source": 'owner/na"me', "revision": "abc", "family": "sd", "options": {"variant": "fp16"}}
    block = add_model(path, "seedream3.0", fields, comment="easel models pull owner/name")
    assert block == (
        "# easel models pull owner/name\n"
        '[models."seedream3.0"]\n'
        'source = "owner/na\\"me"\n'
        'revision = "abc"\n'
        'family = "sd"\n'
        'options = { variant = "fp16" }\n'
    )
    assert path.read_text() == CATALOG + "\n" + block
    assert path.stat().st_mode & 0o777 == 0o640
    catalog = load_catalog(path)
    entry = catalog.resolve("seedream3.0")
    assert (entry.source, entry.revision, entry.options) == ('owner/na"me', "abc", {"variant": "fp16"})
    assert catalog.resolve("a").defaults.steps == 3 and catalog.default_model == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.toml"]  # no temporary file left


def test_refused_entries_leave_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    for name, fields, message in [
        ("a", {"source": "x"}, "already has a model named 'a'"),
        ("ALPHA", {"source": "x"}, "already has an alias of model 'a' named 'ALPHA'"),
        ("b c", {"source": "x"}, "not a usable model name"),
        ("b", {"source": "x", "family": "sd9"}, "would not load with it"),
        ("b", {"source": "x.safetensors", "family": "sd"}, "options.config"),
    ]:
        with pytest.raises(CatalogFileError, match=message):
            add_model(path, name, fields)
        assert path.read_text() == CATALOG
    path.write_text("[models.broken\n")
    with pytest.raises(CatalogFileError, match="does not load as it is"):
        check_new_name(path, "b")


def test_a_missing_catalog_is_created_and_a_symlinked_one_kept_a_link(tmp_path: Path) -> None:
    new = tmp_path / "sub" / "catalog.toml"
    add_model(new, "m", {"source": "owner/m"})
    assert load_catalog(new).default_model == "m"
    real = tmp_path / "real.toml"
    real.write_text(CATALOG)
    link = tmp_path / "link.toml"
    os.symlink(real, link)
    add_model(link, "m", {"source": "owner/m"})
    assert link.is_symlink() and "[models.m]" in real.read_text()


def test_paths_and_names(tmp_path: Path) -> None:
    catalog = tmp_path / "models" / "catalog.toml"
    assert catalog_path_for(tmp_path / "models" / "sd" / "x", catalog) == "sd/x"
    assert catalog_path_for(tmp_path / "other", catalog) == str((tmp_path / "other").resolve())
    assert default_name("stabilityai/stable-diffusion-xl-base-1.0") == "stable-diffusion-xl-base-1.0"
    assert default_name("/data/My Model v2/") == "my-model-v2"
    assert default_name("???") == "model"
    assert entry_text("m", {"source": "s", "family": None, "options": {}}) == '[models.m]\nsource = "s"\n'
