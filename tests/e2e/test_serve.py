"""The README's path, as a user walks it: `easel serve` on a fresh data folder with the shipped catalog
(the built-in model), the first-start admin key, create -> poll -> download."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from helpers import open_image
from processes import easel_env, run_easel, start_serve

pytestmark = pytest.mark.slow


def test_serve_first_start_create_poll_download(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc, url = start_serve(easel_env(data_dir=str(tmp_path / "data")), log)
    try:
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
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended
        assert proc.stop(60) in (0, -15)
    assert "Finished server process" in log.read_text()


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    env = easel_env(data_dir=str(tmp_path / "data"))
    r = run_easel("serve", "--no-auth", "--host", "0.0.0.0", env=env, timeout=120)
    assert r.returncode == 2 and "loopback only" in r.stderr


def test_no_auth_on_loopback_serves_without_keys(tmp_path: Path) -> None:
    env = easel_env(data_dir=str(tmp_path / "data"), worker_enabled="false")
    log = tmp_path / "serve.log"
    proc, url = start_serve(env, log, "--no-auth")
    try:
        assert "API keys are OFF" in log.read_text()
        assert not (tmp_path / "data" / "admin-key.txt").exists()
        assert httpx.post(f"{url}/api/v1/generations", json={"prompt": "x"}).status_code == 201
    finally:
        proc.stop(60)
