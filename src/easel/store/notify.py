"""Waking idle workers the moment a job is queued, without polling.

Every worker binds a Unix datagram socket in `<data_dir>/run/`; `ring()` sends one byte to each socket
there. A worker in the server process and `easel worker` processes on the same machine are woken alike.
Sockets of dead workers are removed by the first ring that finds them refusing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import tempfile
import uuid
from pathlib import Path


class Doorbell:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # AF_UNIX paths are limited to ~107 bytes; fall back to a short private dir for deep data dirs.
        if len(str(run_dir.resolve())) > 80:
            digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.run_dir = Path(tempfile.gettempdir()) / f"easel-{digest}"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def ring(self) -> int:
        """Wake every listening worker; returns how many were reached."""
        reached = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for path in self.run_dir.glob("w-*.sock"):
                try:
                    s.sendto(b"!", str(path))
                    reached += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()
                except BlockingIOError:
                    reached += 1  # its buffer is full of rings: it is already awake
        return reached

    def listener(self) -> DoorbellListener:
        return DoorbellListener(self.run_dir / f"w-{uuid.uuid4().hex[:12]}.sock")


class DoorbellListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._r, self._w = os.pipe()  # lets close()/interrupt() wake a waiting thread

    def wait(self, timeout: float) -> bool:
        """Block until rung, interrupted, or `timeout` seconds; True if rung. Drains queued rings."""
        ready, _, _ = select.select([self.sock.fileno(), self._r], [], [], max(0.0, timeout))
        rung = False
        if self.sock.fileno() in ready:
            rung = True
            with contextlib.suppress(BlockingIOError):
                while True:
                    self.sock.recv(16)
        return rung

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, b"x")

    def close(self) -> None:
        self.sock.close()
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.path.unlink()
