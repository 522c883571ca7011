"""A real HTTP webhook receiver for tests: http.server in a thread on a loopback address, recording
every request (headers and raw body) and answering scripted status codes."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    """Answers `answers` in order (then `default`); a 3xx carries `Location: redirect_to`."""

    def __init__(
        self,
        answers: list[int] | None = None,
        *,
        default: int = 200,
        redirect_to: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        self.requests: list[Received] = []
        self.answers = list(answers or [])
        self.default = default
        self.redirect_to = redirect_to
        self._cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with outer._cond:
                    outer.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = outer.answers.pop(0) if outer.answers else outer.default
                    outer._cond.notify_all()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", outer.redirect_to)
                reply = b'{"ok":true}' if status < 300 else b"nope"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def wait(self, n: int, timeout: float = 30.0) -> list[Received]:
        """The first `n` requests, once they have arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self.requests)
                    raise AssertionError(f"{got} webhook requests after {timeout}s, wanted {n}")
                self._cond.wait(left)
            return list(self.requests[:n])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
