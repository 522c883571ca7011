from __future__ import annotations

from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.settings import Settings


def test_shipped_catalog_loads_and_defaults_to_builtin() -> None:
    catalog = Catalog.load(Settings().catalog)
    entry = catalog.resolve(None)
    assert entry.name == catalog.default_model == "easel-builtin"
    assert catalog.source_path(entry).endswith("models/builtin")


def test_duplicate_alias_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[models.a]\nsource = "x"\naliases = ["same"]\n[models.b]\nsource = "y"\naliases = ["SAME"]\n'
    )
    with pytest.raises(ValueError, match="used by two models"):
        Catalog.load(path)


def test_bad_entry_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.a]\nsource = "x"\naspect_ratios = ["5:9"]\n')
    with pytest.raises(ValueError, match="model 'a'"):
        Catalog.load(path)


def test_missing_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('default_model = "zzz"\n[models.a]\nsource = "x"\n')
    with pytest.raises(ValueError, match="default_model"):
        Catalog.load(path)


def test_hub_ids_stay_hub_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.a]\nsource = "stabilityai/sd-turbo"\n[models.b]\nsource = "local"\n')
    (tmp_path / "local").mkdir()
    cat = Catalog.load(path)
    assert cat.source_path(cat.models["a"]) == "stabilityai/sd-turbo"
    assert cat.source_path(cat.models["b"]) == str(tmp_path / "local")
