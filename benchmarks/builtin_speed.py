"""Benchmark: generation time of Easel's built-in model (a benchmark, not a test).

    .venv/bin/python benchmarks/builtin_speed.py [--model models/builtin] [--threads 2] [--runs 5]

Measures, after one warm-up call, the median wall time of:
  - one 256x256 image: native 32x32 generation (default steps and guidance from
    models/builtin/easel.toml) + Lanczos upscale to 256x256, the way Easel serves it
  - 8 images in one call (prompt list), 256x256 each
  - one 9:16 image (native 32x56, upscaled to 288x512)
  - image-to-image (strength 0.3) and inpainting on a 32x32 source
and the pipeline load time; then, in the same process and with the same settings:
  - the same 256x256 image through Easel's engine (DiffusersBackend, the serving path)
  - a baseline: the same pipeline with the UNet of the first built-in model (attention at
    all four levels, including 1,024-token cross-attention at 32 px; random weights: speed
    does not depend on them), reported as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_toml(path):
    try:
        import tomllib
    except ImportError:  # pragma: no cover
        return {}
    with open(path, "rb") as f:
        return tomllib.load(f)


# The first built-in model's UNet (session 1): cross-attention at every level, 32 px included.
BASELINE_UNET = dict(
    down_block_types=("CrossAttnDownBlock2D",) * 4,
    up_block_types=("CrossAttnUpBlock2D",) * 4,
    only_cross_attention=(True, True, False, False),
)


def timed(fn, runs):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "builtin"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

    cat = read_toml(os.path.join(args.model, "easel.toml"))
    steps = int(cat.get("default_steps", 20))
    guidance = float(cat.get("default_guidance", 4.0))
    n = int(cat.get("native_size", 32))

    t0 = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(args.model)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    prompt = "a large red circle on a blue background"

    def one(h=n, w=n, out=(256, 256), k=1, p=pipe):
        ims = p(
            [prompt] * k,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=h,
            width=w,
            generator=[torch.Generator().manual_seed(i) for i in range(k)],
        ).images
        return [im.resize(out, Image.LANCZOS) for im in ims]

    one()  # warm-up
    res = {}
    res["load_s"] = round(load_s, 3)
    res["one_256_s"], res["one_256_min_s"] = (round(v, 3) for v in timed(one, args.runs))
    one(k=8)
    res["eight_256_s"], _ = (round(v, 3) for v in timed(lambda: one(k=8), max(2, args.runs // 2)))
    one(h=56, w=32, out=(288, 512))
    res["one_9x16_s"], _ = (round(v, 3) for v in timed(lambda: one(h=56, w=32, out=(288, 512)), args.runs))

    src = pipe(
        prompt, num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0)
    ).images[0]
    i2i = AutoPipelineForImage2Image.from_pipe(pipe)
    inp = AutoPipelineForInpainting.from_pipe(pipe)
    i2i.set_progress_bar_config(disable=True)
    inp.set_progress_bar_config(disable=True)
    mask = np.zeros((n, n), np.uint8)
    mask[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 255
    mask = Image.fromarray(mask)

    def img2img():
        i2i(
            prompt,
            image=src,
            strength=0.3,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(1),
        )

    def inpaint():
        inp(
            "a small yellow star on a blue background",
            image=src,
            mask_image=mask,
            height=n,
            width=n,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(2),
        )

    img2img()
    inpaint()
    res["img2img_0.3_s"], _ = (round(v, 3) for v in timed(img2img, args.runs))
    res["inpaint_s"], _ = (round(v, 3) for v in timed(inpaint, args.runs))

    # the serving path: Easel's diffusers backend (native shape, Lanczos upscale, per-image generators)
    from easel.domain.spec import GenerationSpec
    from easel.engine.backends.diffusers import DiffusersBackend
    from easel.engine.batch import BatchPart, build_batch
    from easel.settings import Settings, load_catalog

    catalog = load_catalog(Path(ROOT) / "models" / "catalog.toml")
    entry = catalog.resolve(None)
    backend = DiffusersBackend(Settings(device="cpu"))
    spec = GenerationSpec(
        prompt=prompt, width=256, height=256, steps=steps, guidance=guidance, seed=0
    ).resolve(catalog, seed=7)
    request = build_batch(catalog, entry, [BatchPart(spec)])
    backend.generate(request, lambda _s, _t: True)
    res["engine_one_256_s"], _ = (
        round(v, 3) for v in timed(lambda: backend.generate(request, lambda _s, _t: True), args.runs)
    )

    # baseline in the same process: the first built-in model's UNet layout
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    old_unet = UNet2DConditionModel.from_config({**pipe.unet.config, **BASELINE_UNET}).eval()
    baseline = StableDiffusionPipeline(**{**pipe.components, "unet": old_unet})
    baseline.set_progress_bar_config(disable=True)
    one(p=baseline)  # warm-up
    res["baseline_one_256_s"], _ = (round(v, 3) for v in timed(lambda: one(p=baseline), args.runs))
    res["current_one_256_again_s"], _ = (round(v, 3) for v in timed(one, args.runs))
    res["speedup_vs_baseline"] = round(res["baseline_one_256_s"] / res["current_one_256_again_s"], 2)
    res.update(
        steps=steps,
        guidance=guidance,
        native=n,
        threads=args.threads,
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
    )
    print("| measurement | median seconds |")
    print("|---|---|")
    for k in [
        "load_s",
        "one_256_s",
        "eight_256_s",
        "one_9x16_s",
        "img2img_0.3_s",
        "inpaint_s",
        "engine_one_256_s",
        "baseline_one_256_s",
        "current_one_256_again_s",
        "speedup_vs_baseline",
    ]:
        print(f"| {k} | {res[k]} |")
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
