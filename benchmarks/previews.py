"""Benchmark: what previews cost the engine. The same batches through Easel's diffusers backend
(`DiffusersBackend.generate`, the serving path) without previews and with N previews per image (the
worker's BatchPreviews hook: the model's current estimate decoded through its VAE at N steps, scaled to
the preview size, and each preview JPEG-encoded as a stream would send it), alternating runs, in one
process; images per second and the ratio with / without.

    .venv/bin/python benchmarks/previews.py [--previews 3] [--batches 1,8] [--runs 5] [--size 256]
                                            [--threads 1] [--json out.json]
    .venv/bin/python benchmarks/previews.py --tiny     # a tiny random pipeline, 2 runs (a test runs it)

Default model: the built-in one (models/builtin: 20 DPM-Solver++ steps at 32 px, upscaled). `--model DIR`
takes any diffusers folder the catalog could name (family read from its files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "builtin"))
    ap.add_argument("--previews", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a tiny random SD pipeline, 2 runs: the script runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from easel.domain.catalog import Catalog
    from easel.domain.spec import GenerationSpec
    from easel.engine.backends.diffusers import DiffusersBackend
    from easel.engine.batch import BatchPart, build_batch
    from easel.engine.previews import BatchPreviews, jpeg
    from easel.service.events import JobEvent
    from easel.settings import Settings

    model, runs, steps = args.model, args.runs, None
    tmp = tempfile.TemporaryDirectory()
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import build_tiny_sd  # type: ignore[import-not-found]

        model = str(build_tiny_sd(Path(tmp.name) / "tiny"))
        runs, steps = 2, 4
    entry = f'[models.m]\nsource = "{model}"\nnative_size = 32\nmin_size = 64\nmax_size = 1024\nmax_n = 8\n'
    catalog = Catalog.parse(entry, base_dir=ROOT)
    model_entry = catalog.resolve("m")
    backend = DiffusersBackend(Settings(device="cpu", data_dir=Path(tmp.name) / "data"))
    encoded: list[int] = []

    def publish(ev: JobEvent) -> None:  # what the native stream does with each preview
        encoded.append(len(jpeg(ev.data["image"])))

    def run(request: Any, jobs: dict[str, Any] | None) -> None:
        hook = None if jobs is None else BatchPreviews(jobs, [(g, 0) for g in jobs], publish, None)
        if hook is None:
            backend.generate(request, lambda _s, _t: True)
        else:
            backend.generate(request, lambda _s, _t: True, hook)

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        specs = [
            GenerationSpec(
                prompt="a large red circle on a blue background",
                size=f"{args.size}x{args.size}",
                steps=steps,
                previews=args.previews,
            ).resolve(catalog, seed=100 + i)
            for i in range(batch)
        ]
        request = build_batch(catalog, model_entry, [BatchPart(s) for s in specs])
        ids = [f"job{i}" for i in range(batch)]

        plain = partial(run, request, None)
        previewed = partial(run, request, dict(zip(ids, specs, strict=True)))
        plain()  # warm-up (loads the pipeline)
        previewed()
        times: dict[str, list[float]] = {"plain": [], "previews": []}
        for _ in range(runs):  # alternating, so both see the same machine
            for name, fn in (("plain", plain), ("previews", previewed)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        plain_s, prev_s = statistics.median(times["plain"]), statistics.median(times["previews"])
        rows.append(
            {
                "batch": batch,
                "previews_per_image": args.previews,
                "plain_images_per_s": round(batch / plain_s, 3),
                "previews_images_per_s": round(batch / prev_s, 3),
                "ratio": round(plain_s / prev_s, 3),
            }
        )
    result = {
        "model": "tiny" if args.tiny else model,
        "size": args.size,
        "threads": args.threads,
        "runs": runs,
        "load": os.getloadavg(),
        "rows": rows,
        "mean_preview_jpeg_bytes": round(statistics.mean(encoded)) if encoded else 0,
    }
    print("| batch | previews per image | images/s without | images/s with | with / without |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['previews_per_image']} | {r['plain_images_per_s']} | "
            f"{r['previews_images_per_s']} | {r['ratio']} |"
        )
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
