from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from easel.domain.catalog import Catalog
from easel.engine.sources import model_source
from easel.settings import Settings, load_catalog


def test_shipped_catalog_loads_and_defaults_to_builtin() -> None:
    catalog = Settings().load_catalog()
    entry = catalog.resolve(None)
    assert entry.name == catalog.default_model == "easel-builtin"
    assert model_source(catalog, entry).endswith("models/builtin")


def test_duplicate_alias_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[models.a]\nsource = "x"\naliases = ["same"]\n[models.b]\nsource = "y"\naliases = ["SAME"]\n'
    )
    with pytest.raises(ValueError, match="used by two models"):
        load_catalog(path)


def test_bad_entry_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.a]\nsource = "x"\naspect_ratios = ["5:9"]\n')
    with pytest.raises(ValueError, match="model 'a'"):
        load_catalog(path)


def test_missing_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('default_model = "zzz"\n[models.a]\nsource = "x"\n')
    with pytest.raises(ValueError, match="default_model"):
        load_catalog(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"catalog file not found: .*nope\.toml"):
        load_catalog(tmp_path / "nope.toml")


def test_hub_ids_stay_hub_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[models.a]\nsource = "stabilityai/sd-turbo"\n[models.b]\nsource = "local"\n')
    (tmp_path / "local").mkdir()
    cat = load_catalog(path)
    assert cat.base_dir == str(tmp_path)
    assert model_source(cat, cat.models["a"]) == "stabilityai/sd-turbo"
    assert model_source(cat, cat.models["b"]) == str(tmp_path / "local")


def test_parse_reads_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalog.parse works on the text it is handed: no open(), no Path look-ups."""

    def no_io(*_a: object, **_k: object) -> None:
        raise AssertionError("Catalog.parse touched the filesystem")

    monkeypatch.setattr(builtins, "open", no_io)
    for name in ("exists", "is_file", "is_dir", "read_text", "stat", "resolve"):
        monkeypatch.setattr(Path, name, no_io)
    cat = Catalog.parse(
        'default_model = "b"\n[models.a]\nsource = "x"\n[models.b]\nsource = "y"\naliases = ["bee"]\n',
        base_dir="/nowhere",
    )
    assert cat.base_dir == "/nowhere" and cat.default_model == "b"
    assert cat.resolve("BEE").name == "b" and cat.resolve(None).source == "y"


def test_parse_errors_name_the_origin() -> None:
    with pytest.raises(ValueError, match=r"catalog my\.toml: model 'a'"):
        Catalog.parse('[models.a]\nsource = "x"\nmax_n = 0\n', base_dir=".", origin="my.toml")
    with pytest.raises(ValueError, match=r"^catalog: presets: "):
        Catalog.parse('[styles.s]\nnope = 1\n[models.a]\nsource = "x"\n', base_dir=".")


def test_model_source_resolves_a_folder_relative_to_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "weights" / "m").mkdir(parents=True)
    cat = Catalog.parse(
        '[models.a]\nsource = "weights/m"\n[models.b]\nsource = "weights/missing"\n',
        base_dir=str(tmp_path),
    )
    assert model_source(cat, cat.models["a"]) == str(tmp_path / "weights" / "m")
    assert model_source(cat, cat.models["b"]) == "weights/missing"  # not there: a hub id
