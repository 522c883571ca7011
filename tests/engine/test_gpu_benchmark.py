"""benchmarks/gpu.py keeps working: its --tiny mode (tiny random SDXL and FLUX.1 [schnell] pipelines on
the CPU, raw diffusers against Easel's backend) runs and prints its table. Timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_in_its_tiny_cpu_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")} | {"OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--runs", "1", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "| model | size | dtype | batch | raw images/s | Easel images/s | Easel / raw |" in lines
    rows = [line.split(" | ")[:4] for line in lines if line.startswith("| tiny-")]
    assert rows == [
        ["| tiny-sdxl", "64x64", "fp32", "1"],
        ["| tiny-sdxl", "64x64", "fp32", "4"],
        ["| tiny-flux-schnell", "64x64", "fp32", "1"],
        ["| tiny-flux-schnell", "64x64", "fp32", "4"],
    ]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and len(result["rows"]) == 4
    assert all(r["raw_images_per_s"] > 0 and r["easel_images_per_s"] > 0 for r in result["rows"])


def test_without_cuda_the_real_mode_says_what_to_do() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--sdxl-turbo", "stabilityai/sdxl-turbo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no CUDA on this machine" in done.stdout and "--tiny" in done.stdout
