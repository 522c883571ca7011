"""benchmarks/serving.py --quick runs end to end (so the script cannot rot): it starts `easel serve` of this
tree through benchmarks/easel_launch.py with the simulated backend, runs its loads, and prints its tables.
Nothing here asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_serving_benchmark_runs_and_prints_its_tables(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--quick", "--split", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| tree | model | size | batch | clients | images/s | alone images/s | ratio |" in proc.stdout
    assert "| current | simulated | 64x64 | 1 | 1 |" in proc.stdout
    assert "| current | simulated | 64x64 | 8 | 8 |" in proc.stdout
    assert "| tree | while | GET p50 | GET p99 |" in proc.stdout
    result = json.loads(out.read_text())
    loads = result["loads"]
    assert [(x["model"], x["size"], x["batch"], x["clients"]) for x in loads] == [
        ("simulated", 64, 1, 1),
        ("simulated", 64, 8, 8),
        ("simulated-split", 64, 8, 16),  # the worker in its own process
    ]
    for x in loads:
        assert x["alone_per_s"] > 0 and x["ratio"] is not None
        # This tree's in-process worker reports its stage counters on /metrics: every stage column is
        # filled; a worker in its own process has no /metrics, so split loads show the server's total only.
        split = x["model"].endswith("-split")
        stages = [x["cpu_ms"][k] for k in ("http", "db", "decode", "encode", "store")]
        assert all(v is None for v in stages) if split else all(isinstance(v, float) for v in stages)
        assert x["cpu_ms"]["server"] > 0
    assert set(result["idle"]) == {"current/simulated"}
    assert loads[1]["latency_ms"]["probes"] > 0
