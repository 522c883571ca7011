"""Idle pickup latency: from a job's commit to a worker's claim, with an idle worker waiting.

Compares the doorbell / LISTEN-NOTIFY wake-up with a baseline worker that polls every 250 ms (the same
process, the same database), and reports medians and p95 in milliseconds.

    .venv/bin/python benchmarks/idle_pickup.py [--database-url URL] [--jobs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from easel.domain.spec import GenerationSpec
from easel.runtime import Runtime
from easel.settings import Settings
from support import write_catalog
from tiny import build_tiny_sd


class NullBackend:
    """Returns instantly: we measure the queue, not the model."""

    calls = 0

    def generate(self, request, on_step):  # type: ignore[no-untyped-def]
        from PIL import Image

        return [Image.new("RGB", (request.width, request.height)) for _ in request.items]


def measure(runtime: Runtime, jobs: int, poll: float | None) -> list[float]:
    worker = runtime.make_worker(backend=NullBackend())  # type: ignore[arg-type]
    latencies: list[float] = []
    if poll is not None:  # baseline: deaf to the doorbell, polls on a timer
        worker._listener.wait = lambda timeout: time.sleep(poll) or False  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    time.sleep(0.5)
    for _ in range(jobs):
        gen = runtime.generations.submit(runtime.principal(), GenerationSpec(prompt="x", size="64x64"))
        while True:
            g = runtime.repo.get_generation(runtime.default_project_id, gen.id)
            if g.started_at is not None:
                latencies.append((g.started_at - g.created_at).total_seconds() * 1000)
                break
            time.sleep(0.001)
        time.sleep(0.2)  # let the worker go idle again
    worker.stop()
    thread.join(10)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--jobs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = write_catalog(root / "catalog.toml", build_tiny_sd(root / "tiny"))
        settings = Settings(
            data_dir=root / "data",
            database_url=args.database_url,
            catalog=catalog,
            idle_check_seconds=600,
            secret_key="bench",
        )
        runtime = Runtime.build(settings)
        db = runtime.repo.engine.dialect.name
        for name, poll in (("wake-up (doorbell/NOTIFY)", None), ("baseline: poll every 250 ms", 0.25)):
            lat = measure(runtime, args.jobs, poll)
            p95 = statistics.quantiles(lat, n=20)[18]
            print(
                f"{db:10s} {name:30s} median {statistics.median(lat):7.1f} ms   p95 {p95:7.1f} ms   "
                f"max {max(lat):7.1f} ms  (n={len(lat)})"
            )
        runtime.close()


if __name__ == "__main__":
    main()
