"""benchmarks/previews.py --tiny runs end to end (so the script cannot rot): a tiny pipeline through Easel's
diffusers backend without and with previews, its table printed. Nothing here asserts a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_previews_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "previews.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "previews.py"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| batch | previews per image | images/s without | images/s with | with / without |" in proc.stdout
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 8]
    assert all(r["plain_images_per_s"] > 0 and r["previews_images_per_s"] > 0 for r in result["rows"])
    assert result["mean_preview_jpeg_bytes"] > 0  # previews were made and encoded
