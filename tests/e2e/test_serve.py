"""The README's path, as a user walks it: `easel serve` on a fresh data folder with the shipped catalog
(the built-in model), the first-start admin key, create -> poll -> download."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import open_image
from processes import free_port
from support import wait_healthy

pytestmark = pytest.mark.slow


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "easel", *args], env=env, stdout=out, stderr=out)


def test_serve_first_start_create_poll_download(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    env |= {"EASEL_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "serve.log"
    proc = start(["serve", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: proc.poll() is None, log.read_text)
        key_file = tmp_path / "data" / "admin-key.txt"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert str(key_file) in log.read_text()  # the user is told where the key is
        key = key_file.read_text().strip()
        assert httpx.post(f"{url}/api/v1/generations", json={"prompt": "x"}).status_code == 401

        headers = {"Authorization": f"Bearer {key}"}
        body = {
            "prompt": "a large red circle on a blue background",
            "aspectRatio": "1:1",
            "imageSize": "thumbnail",
            "seed": 42,
        }
        r = httpx.post(f"{url}/api/v1/generations", json=body, headers=headers)
        assert r.status_code == 201, r.text
        gid = r.json()["data"]["id"]
        deadline = time.monotonic() + 180
        while True:
            data = httpx.get(f"{url}/api/v1/generations/{gid}", headers=headers).json()["data"]
            if data["status"] in ("success", "failed"):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert data["status"] == "success", data
        png = httpx.get(data["outputImage"]["storageUrl"])  # the signed link needs no key
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        image = open_image(png.content)
        assert image.format == "PNG" and image.size == (256, 256)
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended
        assert proc.wait(60) in (0, -15)
    assert "Finished server process" in log.read_text()


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    env = dict(os.environ) | {"EASEL_DATA_DIR": str(tmp_path / "data")}
    r = subprocess.run(
        [sys.executable, "-m", "easel", "serve", "--no-auth", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "loopback only" in r.stderr


def test_no_auth_on_loopback_serves_without_keys(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ) | {"EASEL_DATA_DIR": str(tmp_path / "data"), "EASEL_WORKER_ENABLED": "false"}
    log = tmp_path / "serve.log"
    proc = start(["serve", "--no-auth", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: proc.poll() is None, log.read_text)
        assert "API keys are OFF" in log.read_text()
        assert not (tmp_path / "data" / "admin-key.txt").exists()
        assert httpx.post(f"{url}/api/v1/generations", json={"prompt": "x"}).status_code == 201
    finally:
        proc.terminate()
        proc.wait(60)
