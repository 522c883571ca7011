"""The client is a separate, light distribution: its metadata requires only httpx, it imports nothing of
the server (torch, fastapi, sqlalchemy, pydantic, easel), and its modules import only the standard
library, httpx and itself."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
SERVER_STACK = {"torch", "fastapi", "sqlalchemy", "pydantic", "starlette", "diffusers", "easel"}


def test_pyproject_requires_only_httpx() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "easel-client"
    assert project["dependencies"] == ["httpx>=0.27"]
    assert project["requires-python"] == ">=3.11"
    assert "optional-dependencies" not in project


@pytest.mark.slow
def test_built_wheel_requires_only_httpx(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info next to the sources
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = tmp_path.glob("easel_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(metadata).decode().splitlines()
        names = z.namelist()
    assert [line for line in lines if line.startswith("Requires-Dist:")] == ["Requires-Dist: httpx>=0.27"]
    assert "Name: easel-client" in lines
    assert "easel_client/py.typed" in names
    assert all(n.startswith(("easel_client/", "easel_client-")) for n in names), names


def test_import_leaves_the_server_stack_out() -> None:
    code = "import json, sys, easel_client; print(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    loaded = {name.split(".")[0] for name in json.loads(r.stdout)}
    assert "easel_client" in loaded and "httpx" in loaded
    assert not loaded & SERVER_STACK, loaded & SERVER_STACK


def test_modules_import_only_the_standard_library_httpx_and_themselves() -> None:
    allowed = set(sys.stdlib_module_names) | {"httpx", "easel_client"}
    found: list[str] = []
    for path in sorted((CLIENT / "easel_client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] not in allowed]
    assert found == []


def test_easel_client_is_the_client_where_the_server_is_installed() -> None:
    import easel_client

    import easel.client

    assert easel.client.Easel is easel_client.Easel and easel.client.AsyncEasel is easel_client.AsyncEasel
    assert set(easel.client.__all__) == set(easel_client.__all__)
