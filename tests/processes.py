"""Every `easel` subprocess the tests and benchmarks start: the one place that builds a child's environment,
starts it (`EaselProcess`, `start_serve`, `start_api`, `start_worker`), waits for it to answer
(`wait_healthy`), stops it, and runs a command to completion (`run_easel`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from easel.settings import Settings

EASEL = (sys.executable, "-m", "easel")  # how a child runs the `easel` command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _storage_env(settings: Settings) -> dict[str, str]:
    """EASEL_* variables that give a child the same blob store as `settings`."""
    if not settings.storage_url:
        return {}
    env = {"EASEL_STORAGE_URL": settings.storage_url, "EASEL_S3_PRESIGN": str(settings.s3_presign).lower()}
    for name in (
        "s3_endpoint_url",
        "s3_region",
        "s3_access_key_id",
        "s3_secret_access_key",
        "s3_addressing_style",
    ):
        value = getattr(settings, name)
        if value is not None:
            env[f"EASEL_{name.upper()}"] = str(value)
    return env


def easel_env(settings: Settings | None = None, **easel: str) -> dict[str, str]:
    """The environment for an `easel` child: the current environment without any EASEL_* variable, one
    torch thread; with `settings`, its data folder, database, catalog, secret key and blob store; plus
    `easel` (EASEL_ prefixed names, which win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    env["OMP_NUM_THREADS"] = "1"
    if settings is not None:
        env |= {
            "EASEL_DATA_DIR": str(settings.data_dir),
            "EASEL_DATABASE_URL": settings.resolved_database_url,
            "EASEL_CATALOG": str(settings.catalog),
        } | _storage_env(settings)
        if settings.secret_key:
            env["EASEL_SECRET_KEY"] = settings.secret_key
    return env | {f"EASEL_{k.upper()}": v for k, v in easel.items()}


class EaselProcess:
    """One `easel ARGS` child (`command` + `args`), its stdout and stderr appended to `log`."""

    def __init__(
        self, args: Sequence[str], env: dict[str, str], log: Path, *, command: Sequence[str] = EASEL
    ) -> None:
        self.args, self.log = list(args), log
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen([*command, *args], env=env, stdout=out, stderr=out)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def output(self) -> str:
        """All the child has written so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 4000) -> str:
        """The end of the log, headed by what the child is (for assertion messages)."""
        return f"---- {self.log.name} ({' '.join(self.args)}, pid {self.pid})\n{self.output()[-chars:]}"


def wait_healthy(url: str, proc: EaselProcess, timeout: float = 120) -> None:
    """Poll `url`/healthz until 200; fail with the child's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.alive(), proc.tail()
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, proc.tail()
        time.sleep(0.1)


def start_serve(env: dict[str, str], log: Path, *args: str, timeout: float = 120) -> tuple[EaselProcess, str]:
    """`easel serve ARGS` on a free loopback port; it and its base URL once /healthz answers (killed if it
    never does)."""
    port = free_port()
    proc = EaselProcess(["serve", "--host", "127.0.0.1", "--port", str(port), *args], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout)
    except BaseException:
        proc.kill()
        raise
    return proc, url


def start_api(env: dict[str, str], log: Path, *args: str) -> tuple[EaselProcess, str]:
    """`easel serve --no-worker ARGS` (an API-only process), as `start_serve`."""
    return start_serve(env, log, "--no-worker", *args)


def start_worker(env: dict[str, str], log: Path) -> EaselProcess:
    """`easel worker` (not waited for: a worker has no health check)."""
    return EaselProcess(["worker"], env, log)


def run_easel(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`easel ARGS` run to completion; its exit status and captured text output."""
    return subprocess.run([*EASEL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
