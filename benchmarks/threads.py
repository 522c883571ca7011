"""torch CPU threads under contention: one 256x256 built-in image through Easel's engine at each thread
count, with `--hogs N` busy processes (pure-Python loops, one core each) running meanwhile.

    .venv/bin/python benchmarks/threads.py [--threads 1,2] [--hogs 1] [--runs 5]

Each thread count runs in a fresh process (torch threads are per process), with EASEL_TORCH_THREADS set
and OMP_NUM_THREADS unset, after one warm-up image; medians of --runs. The hogs are started before and
stopped after, by this script. docs/performance.md, "Threads under contention".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, statistics, sys, time
from pathlib import Path
from easel.domain.spec import GenerationSpec
from easel.engine.backends.diffusers import DiffusersBackend
from easel.engine.batch import BatchPart, build_batch
from easel.settings import Settings, load_catalog
catalog = load_catalog(Path(sys.argv[1]) / "models" / "catalog.toml")
backend = DiffusersBackend(Settings(device="cpu"))
spec = GenerationSpec(prompt="a large red circle on a blue background", width=256, height=256)
request = build_batch(catalog, catalog.resolve(None), [BatchPart(spec.resolve(catalog, seed=7))])
backend.generate(request, lambda s, t: True)
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    backend.generate(request, lambda s, t: True)
    times.append(time.perf_counter() - t0)
print(json.dumps({"threads": backend.threads, "median": statistics.median(times), "min": min(times),
                  "max": max(times), "load": os.getloadavg()[0]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--hogs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        time.sleep(1)
        print(f"{os.cpu_count()} cores, {args.hogs} busy processes, load {os.getloadavg()[0]:.2f} at start")
        print("| torch threads | median | fastest | slowest | load average (1 min) at the end |")
        print("|---|---|---|---|---|")
        for n in (int(t) for t in args.threads.split(",")):
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {
                "EASEL_TORCH_THREADS": str(n)
            }
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(ROOT), str(args.runs)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            cells = [f"{r[k]:.2f} s" for k in ("median", "min", "max")]
            print(f"| {r['threads']} | {' | '.join(cells)} | {r['load']:.2f} |")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
