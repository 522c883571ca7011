"""The `easel` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import open_image
from processes import easel_env, run_easel
from support import write_catalog
from tiny import build_tiny_lora


@pytest.fixture(scope="module")
def ink(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA file for the tiny model."""
    return build_tiny_lora(tiny_model_dir, tmp_path_factory.mktemp("cli-lora"), "sd", seed=1)


@pytest.fixture
def cli_env(tmp_path: Path, tiny_model_dir: Path, ink: Path) -> dict[str, str]:
    catalog = write_catalog(tmp_path / "catalog.toml", tiny_model_dir)
    with catalog.open("a") as f:
        f.write(f'\n[loras.ink]\nsource = "{ink}"\nfamilies = ["sd"]\n')
    return easel_env(catalog=str(catalog), data_dir=str(tmp_path / "data"))


def test_generate_writes_images_without_a_server(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out.png"
    r = run_easel(
        "generate",
        "a red circle",
        "-o",
        str(out),
        "--size",
        "96x64",
        "--seed",
        "5",
        "-n",
        "2",
        env=cli_env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    files = [tmp_path / "out-0.png", tmp_path / "out-1.png"]
    assert [open_image(f.read_bytes()).size for f in files] == [(96, 64), (96, 64)]
    assert "seed=5" in r.stdout and "seed=6" in r.stdout
    again = run_easel(
        "generate",
        "a red circle",
        "-o",
        str(tmp_path / "again.png"),
        "--size",
        "96x64",
        "--seed",
        "5",
        env=cli_env,
        cwd=tmp_path,
    )
    assert again.returncode == 0
    assert (tmp_path / "again.png").read_bytes() == files[0].read_bytes()
    inked = run_easel(
        "generate", "a red circle", "-o", str(tmp_path / "ink.png"), "--size", "96x64", "--seed", "5",
        "--lora", "ink:2", env=cli_env, cwd=tmp_path,
    )  # fmt: skip
    assert inked.returncode == 0, inked.stderr
    assert (tmp_path / "ink.png").read_bytes() != files[0].read_bytes()
    assert not (tmp_path / "data" / "easel.db").exists()  # no database involved


def test_generate_reports_bad_input(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_easel("generate", "x", "--size", "100x100", env=cli_env, cwd=tmp_path)
    assert r.returncode == 2 and "multiple of 8" in r.stderr
    r = run_easel("generate", "x", "-o", str(tmp_path / "a.gif"), env=cli_env, cwd=tmp_path)
    assert r.returncode != 0 and "--output" in r.stderr
    r = run_easel("generate", "x", "--lora", "nope", env=cli_env, cwd=tmp_path)
    assert r.returncode == 2 and "nope" in r.stderr
    r = run_easel("generate", "x", "--lora", "ink:lots", env=cli_env, cwd=tmp_path)
    assert r.returncode == 2 and "--lora" in r.stderr


def test_db_upgrade_and_models_list(tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_easel("db", "upgrade", env=cli_env, cwd=tmp_path)
    from easel.store.migrate import head_revision

    assert r.returncode == 0 and f"revision {head_revision()}" in r.stdout
    assert (tmp_path / "data" / "easel.db").exists()
    r = run_easel("models", "list", env=cli_env | {"COLUMNS": "200"}, cwd=tmp_path)
    assert r.returncode == 0 and "tiny-square" in r.stdout and "dall-e-2" in r.stdout
    assert run_easel("--version", env=cli_env, cwd=tmp_path).stdout.startswith("easel ")
