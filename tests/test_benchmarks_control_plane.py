"""benchmarks/control_plane.py --quick runs end to end on both databases (so the script cannot rot): creates
through a real `easel serve --no-worker`, the SQL fill, the reads, its tables. Nothing here asserts a
timing; it asserts what must hold at any speed: no create answered 201 is lost, no read failed, the log
has no error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_control_plane_benchmark_runs_and_prints_its_tables(tmp_path: Path) -> None:
    out = tmp_path / "control_plane.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "control_plane.py"), "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| tree | db | rows | creates/s (one core) |" in proc.stdout
    assert "| tree | db | read | n | p50 ms | p95 ms |" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [(r["tree"], r["db"], r["rows"]) for r in runs] == [
        ("current", "sqlite", 2000),
        ("current", "postgresql", 2000),
    ]
    for r in runs:
        assert r["creates"] > 0 and r["lost"] == 0 and r["log_errors"] == [], r
        assert set(r["reads"]) == {
            "list first page",
            "list offset 1,900",
            "list last page",
            "cursor page 1,000 deep",
            "get by id",
        }, r["reads"]
        assert all(x["n"] >= 1 and x["p95_ms"] >= x["p50_ms"] > 0 for x in r["reads"].values()), r["reads"]
