"""The tests' real S3 server: a throwaway Ceph RADOS Gateway (scripts/ceph-rgw.sh).

The session fixtures `rgw` and `bucket` (tests/conftest.py) use `start_rgw` / `stop_rgw`: they start the
gateway (installing Debian's Ceph packages on a fresh machine; root or passwordless sudo) or reuse a
running one, and the last session using it stops it if a test session started it
(EASEL_TEST_KEEP_RGW=1 keeps it for faster re-runs). When Ceph cannot be installed or started the S3
tests FAIL; EASEL_TEST_SKIP_S3=1 skips them knowingly.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ceph-rgw.sh"
SKIP_S3 = os.environ.get("EASEL_TEST_SKIP_S3") == "1"


def env_lines(text: str) -> dict[str, str]:
    """`export K=V` lines (ceph-rgw.sh's output) as a dict."""
    env = {}
    for line in text.splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


# The sessions using the gateway now (pytest-xdist's workers, or two test runs at once): one file each,
# named by its process id. The last one out stops the gateway if a test session started it (the marker),
# so no session pulls it from under another (which once failed every S3 test of a concurrent run).
USERS = Path(tempfile.gettempdir()) / "easel-test-rgw-users"
STARTED_BY_TESTS = USERS / "started-by-tests"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _other_users() -> list[int]:
    mine = os.getpid()
    pids = [int(f.name) for f in USERS.glob("[0-9]*") if f.name.isdigit()]
    return [p for p in pids if p != mine and _alive(p)]


def start_rgw() -> tuple[dict[str, str], bool]:
    """Start (or reuse) the gateway: its EASEL_S3_* env, and whether it was already running."""
    if SKIP_S3:
        pytest.skip("EASEL_TEST_SKIP_S3=1")
    USERS.mkdir(parents=True, exist_ok=True)
    (USERS / str(os.getpid())).touch()
    was_running = subprocess.run([SCRIPT, "status"], capture_output=True, text=True).returncode == 0
    started = time.monotonic()
    proc = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=1700)
    if proc.returncode != 0:
        pytest.fail(
            f"Could not start a Ceph RADOS Gateway with {SCRIPT.relative_to(REPO)} (exit {proc.returncode}); "
            f"the S3 tests need a real S3 server. Set EASEL_TEST_SKIP_S3=1 to skip them knowingly.\n"
            f"{proc.stderr[-6000:]}",
            pytrace=False,
        )
    if not was_running:
        STARTED_BY_TESTS.touch()
    env = env_lines(proc.stdout)
    print(f"Ceph RGW at {env['EASEL_S3_ENDPOINT_URL']} ready after {time.monotonic() - started:.1f} s")
    return env, was_running


def stop_rgw(was_running: bool) -> None:
    """Stop the gateway when this is the last session using it and a test session started it (and
    EASEL_TEST_KEEP_RGW is not 1). `was_running` is kept for the callers: the marker decides."""
    (USERS / str(os.getpid())).unlink(missing_ok=True)
    if _other_users() or os.environ.get("EASEL_TEST_KEEP_RGW") == "1":
        return
    if STARTED_BY_TESTS.exists():
        STARTED_BY_TESTS.unlink(missing_ok=True)
        subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)


def s3_settings(rgw: dict[str, str]) -> dict[str, Any]:
    """The gateway's settings as Settings keyword arguments."""
    return {
        "s3_endpoint_url": rgw["EASEL_S3_ENDPOINT_URL"],
        "s3_region": rgw["EASEL_S3_REGION"],
        "s3_access_key_id": rgw["EASEL_S3_ACCESS_KEY_ID"],
        "s3_secret_access_key": rgw["EASEL_S3_SECRET_ACCESS_KEY"],
        "s3_addressing_style": rgw["EASEL_S3_ADDRESSING_STYLE"],
    }
