"""Run Easel's command line from a chosen source tree, with the benchmark's `simulated` backend registered.

    python benchmarks/easel_launch.py --src DIR [easel arguments...]   (e.g. --src /tmp/base serve --no-auth)

DIR is an Easel source tree (the folder holding the `easel` package: a checkout's `src/`; a checkout's
root works too). It goes first on sys.path, so the same launcher runs the current tree or an older
checkout (`git worktree add /tmp/base main`) and benchmarks/serving.py compares both in one run. The
`simulated` backend (benchmarks/simulated.py) is registered through `easel.engine.backends.register_backend`
before the command runs; catalogs that name it work in any tree that has that function.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A free loopback port (for the benchmarks that start a server through this launcher)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Poll `url`/healthz until 200; RuntimeError with the log's end if the server exits or never
    answers within `timeout` seconds (then it is killed)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server never answered:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] != "--src":
        raise SystemExit(__doc__)
    src = Path(argv[1]).resolve()
    if (src / "src" / "easel").is_dir():
        src = src / "src"
    if not (src / "easel").is_dir():
        raise SystemExit(f"{src} holds no `easel` package")
    sys.path.insert(0, str(src))
    sys.path.insert(1, str(Path(__file__).resolve().parent))  # simulated.py
    import easel

    assert Path(easel.__file__).resolve().is_relative_to(src), (easel.__file__, src)
    import simulated

    simulated.register()
    from easel.cli import main as easel_main

    sys.argv = ["easel", *argv[2:]]
    easel_main()


if __name__ == "__main__":
    main(sys.argv[1:])
