"""Raw diffusers against Easel's serving path on the same model, batch sizes 1 and 4.

    .venv/bin/python benchmarks/gpu.py --sdxl-turbo PATH_OR_HUB_ID --flux-schnell PATH_OR_HUB_ID \
        [--device cuda:0] [--runs 5] [--batches 1,4] [--compile MODE] [--json out.json]
    .venv/bin/python benchmarks/gpu.py --tiny        # tiny random pipelines on the CPU, in seconds

For each model (SDXL-Turbo at 512x512, FLUX.1 [schnell] at 1024x1024, 4 steps, the same prompts, seeds
and dtypes on both sides):

- raw: `DiffusionPipeline.from_pretrained(folder, dtype=...).to(device)` called by hand with the
  prompts, one CPU generator per image, `output_type="pil"`;
- Easel: `DiffusersBackend.generate` with a BatchRequest built by `engine/batch.py` from a catalog entry
  (the same folder, `options.dtype`), i.e. what a worker runs for one batch: Easel's loader (VAE
  slicing on, the entry's GPU options), the family's arguments, the per-step callback.

One warm-up call per batch size, then the median of `--runs` calls (CUDA synchronised); the table has
images per second and Easel / raw. The phases run one after the other, the first one's pipeline freed
before the second loads, so a model needs only its own memory once. A hub id must already be in the
local Hugging Face cache (`easel models pull ID`); nothing is downloaded. Without CUDA only `--tiny`
(or an explicit `--device cpu`) runs. The suite runs `--tiny` (tests/engine/test_gpu_benchmark.py) so
that this script keeps working; it never asserts timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a red fox in the snow, golden hour"
SHORT = "a red fox"  # the tiny pipelines' tokenizers read 32 characters


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # a local diffusers folder
    family: str
    size: int
    dtype: str  # fp16 / bf16 / fp32
    guidance: float | None  # None: the pipeline takes no guidance scale
    max_sequence_length: int | None = None
    prompt: str = PROMPT


def local_folder(source: str) -> Path | None:
    """The folder of a model on this machine: a diffusers folder, or a hub id's snapshot in the cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    from easel.engine.sources import cached_snapshot

    return cached_snapshot(source)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def timed(fn: Any, runs: int, device: str) -> float:
    fn()  # warm-up (and, with --compile, the compilation)
    times = []
    for _ in range(runs):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def raw(case: Case, device: str, batches: list[int], runs: int, compile_mode: str | None) -> dict[int, float]:
    """Seconds per call of plain diffusers, per batch size."""
    import torch
    from diffusers import DiffusionPipeline

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[case.dtype]
    pipe = DiffusionPipeline.from_pretrained(str(case.source), dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    if compile_mode is not None:
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        denoiser.compile(mode=None if compile_mode == "default" else compile_mode)
    out = {}
    for b in batches:
        kwargs: dict[str, Any] = {
            "prompt": [case.prompt] * b,
            "num_inference_steps": 4,
            "width": case.size,
            "height": case.size,
            "generator": [torch.Generator("cpu").manual_seed(i) for i in range(b)],
            "output_type": "pil",
        }
        if case.guidance is not None:
            kwargs["guidance_scale"] = case.guidance
        if case.max_sequence_length is not None:
            kwargs["max_sequence_length"] = case.max_sequence_length

        def call(kwargs: dict[str, Any] = kwargs) -> None:
            with torch.inference_mode():
                images = pipe(**kwargs).images
            assert len(images) == len(kwargs["prompt"])

        out[b] = timed(call, runs, device)
    return out  # the pipeline goes with this frame; main() frees its memory


def easel(
    case: Case, device: str, batches: list[int], runs: int, compile_mode: str | None, threads: int
) -> dict[int, float]:
    """Seconds per batch through Easel's backend (DiffusersBackend.generate, engine/batch.py)."""
    from easel.domain.catalog import Catalog
    from easel.domain.spec import GenerationSpec
    from easel.engine.backends.diffusers import DiffusersBackend
    from easel.engine.batch import BatchPart, build_batch
    from easel.settings import Settings

    options = [f'dtype = "{case.dtype}"'] + ([f'compile = "{compile_mode}"'] if compile_mode else [])
    text = (
        f"[models.bench]\nsource = {json.dumps(str(case.source))}\nfamily = {json.dumps(case.family)}\n"
        f"min_size = 16\nmax_size = 2048\noptions = {{ {', '.join(options)} }}\n"
    )
    if case.max_sequence_length is not None:
        text += f"max_sequence_length = {case.max_sequence_length}\n"
    text += f"[models.bench.defaults]\nsteps = 4\nguidance = {case.guidance or 0.0}\n"
    catalog = Catalog.parse(text, base_dir=str(ROOT))
    entry = catalog.resolve("bench")
    backend = DiffusersBackend(Settings(device=device, torch_threads=threads))
    out = {}
    for b in batches:
        spec = GenerationSpec(
            prompt=case.prompt, model="bench", width=case.size, height=case.size, n=b, steps=4
        )
        request = build_batch(catalog, entry, [BatchPart(spec.resolve(catalog, seed=0))])

        def call(request: Any = request) -> None:
            images = backend.generate(request, lambda _step, _total: True)
            assert len(images) == len(request.items)

        out[b] = timed(call, runs, device)
    return out


def tiny_cases(folder: Path) -> list[Case]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import TINY_T5_MAX_LENGTH, build_tiny_flux, build_tiny_sdxl

    build_tiny_sdxl(folder / "sdxl")
    build_tiny_flux(folder / "flux-schnell", guidance_embeds=False)
    return [
        Case("tiny-sdxl", str(folder / "sdxl"), "sdxl", 64, "fp32", 0.0, prompt=SHORT),
        Case(
            "tiny-flux-schnell",
            str(folder / "flux-schnell"),
            "flux-schnell",
            64,
            "fp32",
            None,
            TINY_T5_MAX_LENGTH,
            SHORT,
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tiny", action="store_true", help="tiny random pipelines on the CPU (what the suite runs)"
    )
    ap.add_argument("--sdxl-turbo", help="a diffusers folder or a cached hub id (stabilityai/sdxl-turbo)")
    ap.add_argument(
        "--flux-schnell", help="a diffusers folder or a cached hub id (black-forest-labs/FLUX.1-schnell)"
    )
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: Easel's auto)")
    ap.add_argument("--compile", default=None, help="torch.compile mode for both sides (default: none)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch

    device = args.device or ("cpu" if args.tiny else "cuda")
    batches = [int(b) for b in args.batches.split(",")]
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA on this machine (torch {torch.__version__}): run with --tiny, or --device cpu")
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="easel-gpu-bench-")
    runs = args.runs
    if args.tiny:
        cases = tiny_cases(Path(tmp.name))
        runs = min(runs, 2)
    else:
        cases = []
        wanted = [
            ("sdxl-turbo", args.sdxl_turbo, "sdxl", 512, "fp16", 0.0, None),
            ("flux.1-schnell", args.flux_schnell, "flux-schnell", 1024, "bf16", None, 256),
        ]
        for name, source, family, size, dtype, guidance, seq in wanted:
            if source is None:
                continue
            folder = local_folder(source)
            if folder is None:
                print(f"{name}: {source} is not on this machine (a folder, or `easel models pull {source}`)")
                continue
            cases.append(Case(name, str(folder), family, size, dtype, guidance, seq))
        if not cases:
            print("nothing to run: pass --sdxl-turbo and/or --flux-schnell with local weights, or --tiny")
            return 2

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"device {device} ({gpu}), torch {torch.__version__}, {runs} runs, medians; 4 steps")
    rows = []
    for case in cases:
        r = raw(case, device, batches, runs, args.compile)
        free(device)
        e = easel(case, device, batches, runs, args.compile, args.threads)
        free(device)
        for b in batches:
            rows.append(
                {
                    "model": case.name,
                    "size": f"{case.size}x{case.size}",
                    "dtype": case.dtype,
                    "batch": b,
                    "raw_images_per_s": round(b / r[b], 3),
                    "easel_images_per_s": round(b / e[b], 3),
                    "easel_over_raw": round(r[b] / e[b], 3),
                }
            )
    print("| model | size | dtype | batch | raw images/s | Easel images/s | Easel / raw |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['size']} | {row['dtype']} | {row['batch']} | {row['raw_images_per_s']} "
            f"| {row['easel_images_per_s']} | {row['easel_over_raw']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "gpu": gpu, "rows": rows}, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
