from __future__ import annotations

import io
import time

from PIL import Image


def poll(client, gid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/generations/{gid}").json()["data"]
        if body["status"] in ("success", "failed", "canceled") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_create_poll_download(client) -> None:
    r = client.post("/api/v1/generations", json={"prompt": "a red circle", "size": "64x96", "seed": 7})
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["status"] in ("pending", "processing", "success")
    done = poll(client, data["id"])
    assert done["status"] == "success", done
    img = done["outputImage"]
    assert (img["width"], img["height"]) == (64, 96)
    png = client.get(img["storageUrl"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 96)
