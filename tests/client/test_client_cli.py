"""`easel generate --server URL`: the job runs on a real `easel serve` through the client."""

from __future__ import annotations

from pathlib import Path

import pytest
from easel_client import Easel

from helpers import open_image
from processes import easel_env, run_easel

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("client")]


def test_generate_on_a_server_writes_the_files(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # no catalog, no model in this environment: only the server can draw
    env = easel_env(data_dir=str(tmp_path / "nothing-here"), catalog=str(tmp_path / "missing.toml"))
    out = tmp_path / "remote.png"
    args = ["a red circle", "-o", str(out), "--size", "64x48", "--seed", "5", "-n", "2"]
    r = run_easel("generate", *args, "--server", server.url, "--api-key", server.key, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = [tmp_path / "remote-0.png", tmp_path / "remote-1.png"]
    assert [open_image(f.read_bytes()).size for f in files] == [(64, 48), (64, 48)]
    assert "seed=5" in r.stdout and "seed=6" in r.stdout and server.url in r.stdout
    assert "denoising" in r.stdout + r.stderr  # the progress bar
    # the same job as the client's own, byte for byte (same seed)
    with Easel(server.url, server.key) as easel:
        gen = easel.generate("a red circle", size="64x48", seed=5)
    assert files[0].read_bytes() == gen.images[0].bytes()


def test_generate_on_a_server_with_the_key_from_the_environment(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = easel_env(data_dir=str(tmp_path / "d")) | {"EASEL_API_KEY": server.key}
    out = tmp_path / "one.jpg"
    r = run_easel("generate", "x", "-o", str(out), "--size", "64x64", "--server", server.url, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert open_image(out.read_bytes()).format == "JPEG"


def test_generate_on_a_server_reports_errors(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = easel_env(data_dir=str(tmp_path / "d"))
    out = str(tmp_path / "x.png")
    r = run_easel("generate", "x", "-o", out, "--server", server.url, "--api-key", "easel_sk_bad", env=env)
    assert r.returncode == 2 and "401" in r.stderr and "UNAUTHORIZED" in r.stderr
    r = run_easel(
        "generate", "x", "-o", out, "--size", "7x7", "--server", server.url, "--api-key", server.key, env=env
    )
    assert r.returncode == 2 and "400" in r.stderr and "size" in r.stderr
    assert not Path(out).exists()
