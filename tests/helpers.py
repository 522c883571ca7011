"""Small helpers shared by tests."""

from __future__ import annotations

import io
import time
from typing import Any

from PIL import Image


def poll(client: Any, gid: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET the generation until it is finished (native API)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/generations/{gid}").json()["data"]
        if body["status"] in ("success", "failed", "canceled"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {gid} still {body['status']} after {timeout}s")
        time.sleep(0.02)


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im
