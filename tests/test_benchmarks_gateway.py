"""benchmarks/gateway.py --quick runs end to end (so the script cannot rot): a fake upstream process, a
real `easel serve --no-worker` and `easel worker --upstream`, direct calls and jobs through Easel at two
levels of concurrency, its table and JSON. Nothing here asserts a timing; it asserts what must hold at any
speed: every job succeeded, each through one ledger call, and the K calls were really in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_gateway_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gateway.py"), "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| in flight | direct p50 / p95 ms |" in proc.stdout
    result = json.loads(out.read_text())
    assert result["log_errors"] == []
    assert [r["in_flight"] for r in result["rows"]] == [1, 10]
    for r in result["rows"]:
        assert r["easel"]["failures"] == 0 and r["easel"]["calls"] == r["jobs"], r
        assert r["direct"]["peak"] == r["in_flight"], r  # the direct calls really overlapped
        assert r["easel"]["peak"] >= 2 or r["in_flight"] == 1, r  # and so did the gateway's
