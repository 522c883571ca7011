"""benchmarks/provenance.py --quick runs (so the script cannot rot): its table has a row per format, and
the label adds the same few hundred bytes of XMP in each. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_provenance_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "provenance.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "provenance.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| format | images/s with the label | without | ratio | bytes added |" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["format"] for r in rows] == ["png", "jpeg", "webp"]
    assert all(400 < r["bytes_added"] < 800 and r["with_label"] > 0 and r["without"] > 0 for r in rows), rows
