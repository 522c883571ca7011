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


class ImageServer:
    """A local HTTP server on 127.0.0.1 serving fixed files (for image-by-URL tests); `url(path)` links
    to one. Allow-list 127.0.0.1 in `fetch_allow_hosts` for the fetcher to reach it."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        import http.server
        import threading

        served = files
        self.requests: list[str] = []  # the paths asked for, in order
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                found = served.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                body, ctype = found
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def poll_url(
    client: Any, url: str, done: Any, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """GET `url` until `done(body)` is true (any dialect's status call); the last body."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not done after {timeout}s: {body}")
        time.sleep(0.02)


def curl(*args: str) -> tuple[int, Any]:
    """Run curl (a document's example command, host replaced); its status code and JSON body."""
    import json
    import subprocess

    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60, check=True
    )
    body, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(body)
