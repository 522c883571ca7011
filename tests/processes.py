"""Real `easel serve` / `easel worker` processes for multi-process tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import support


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def easel_env(**easel: str) -> dict[str, str]:
    """The current environment without any EASEL_* variable, plus `easel` (EASEL_ prefixed names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    env["OMP_NUM_THREADS"] = "1"
    return env | {f"EASEL_{k.upper()}": v for k, v in easel.items()}


class Proc:
    """One `python -m easel ...` child with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.log = args, log
        out = open(log, "ab")  # noqa: SIM115 - handed to the child
        self.popen = subprocess.Popen([sys.executable, "-m", "easel", *args], env=env, stdout=out, stderr=out)
        out.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"---- {self.log.name} ({' '.join(self.args)}, pid {self.pid})\n{text[-chars:]}"


def start_api(env: dict[str, str], log: Path) -> tuple[Proc, str]:
    """`easel serve --no-worker` on a free port; returns it and its base URL once /healthz answers."""
    port = free_port()
    proc = Proc(["serve", "--no-worker", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def wait_healthy(url: str, proc: Proc, timeout: float = 120) -> None:
    support.wait_healthy(url, lambda: proc.popen.poll() is None, proc.tail, timeout)


def start_worker(env: dict[str, str], log: Path) -> Proc:
    return Proc(["worker"], env, log)
