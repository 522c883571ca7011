"""Evaluate Easel's built-in model on fixed prompts with fixed seeds.

    .venv/bin/python training/evaluate.py                       # models/builtin, prints a table
    .venv/bin/python training/evaluate.py --grid docs/builtin-samples.png --json /tmp/eval.json
    .venv/bin/python training/evaluate.py --renders             # the same measures on true renders

Sets:
  heldout  every held-out colour-shape combination (never seen in training) at every
           position and both sizes, seeded random plain/gradient background (80 prompts)
  fixed    64 fully-stated random prompts from the training distribution

Measures (per image, from its pixels only):
  background  the border pixels (plain) or the top and bottom rows (gradient) are
              nearest, in the 8-colour palette, to the prompted colour(s)
  object mask pixels that differ from the estimated background by more than 80 (RGB, 0-255)
  fg colour   the most common palette colour among the object pixels is the prompted one
  shape       a small CNN trained on masks of synthetic renders (training/shape_classifier.safetensors)
              names the prompted shape
  position    the object's centroid is nearer to where the prompted position puts an
              object of that size than to any of the other four positions
  size        the object's area is nearer (log scale) to the prompted size's area than the other size's
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PALETTE = np.array([scenes.COLORS[c] for c in scenes.COLOR_NAMES], dtype=np.float32)
CLF_PATH = os.path.join(ROOT, "training", "shape_classifier.safetensors")
THRESH = 80.0


# ----------------------------------------------------------------------------- pixel measures
def nearest_color(rgb: np.ndarray) -> np.ndarray:
    d = ((rgb[..., None, :] - PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def analyse(img: np.ndarray, gradient: bool) -> dict:
    """img: HxWx3 float32 0-255. Returns the background estimate, object mask, etc."""
    H, _W, _ = img.shape
    if gradient:
        top = np.median(img[:2].reshape(-1, 3), axis=0)
        bot = np.median(img[-2:].reshape(-1, 3), axis=0)
    else:
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        top = bot = np.median(border, axis=0)
    t = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    bg = top * (1 - t) + bot * t
    dist = np.sqrt(((img - bg) ** 2).sum(-1))
    mask = dist > THRESH
    return dict(top=top, bottom=bot, mask=mask, soft=np.clip(dist / 255.0, 0, 1).astype(np.float32))


class ShapeNet(nn.Module):
    def __init__(self, n=len(scenes.SHAPES)):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64, n)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.c3(x))
        return self.fc(x.amax(dim=(2, 3)))


def _clf_input(img: np.ndarray, gradient: bool) -> np.ndarray:
    return analyse(img, gradient)["soft"][None]


def train_classifier(n: int = 12000, epochs: int = 4, seed: int = 0) -> ShapeNet:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        s = scenes.sample_scene(rng, "all", full_caption=True)
        img = np.asarray(scenes.render(s, 32, 32), dtype=np.float32)
        img = np.clip(img + nrng.normal(0, rng.choice([0, 5, 12]), img.shape), 0, 255)  # robustness
        xs.append(_clf_input(img, len(s.bg) == 2))
        ys.append(scenes.SHAPES.index(s.shape))
    X, Y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    torch.manual_seed(seed)
    net = ShapeNet()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ep in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(X[:2000]).argmax(1) == Y[:2000]).float().mean().item()
    print(f"shape classifier trained: {acc * 100:.1f}% on its training renders", file=sys.stderr)
    return net


def load_classifier() -> ShapeNet:
    from safetensors.torch import load_file, save_file

    if os.path.exists(CLF_PATH):
        net = ShapeNet()
        net.load_state_dict(load_file(CLF_PATH))
        return net.eval()
    net = train_classifier()
    save_file(net.state_dict(), CLF_PATH)
    return net


def expected_centers(s: scenes.Scene, W: int, H: int) -> dict[str, tuple[float, float]]:
    out = {}
    for p in scenes.POSITIONS:
        t = scenes.Scene(**{**s.to_dict(), "position": p, "jx": 0.0, "jy": 0.0})
        cx, cy, _ = scenes.object_center(t, W, H)
        out[p] = (cx, cy)
    return out


def expected_areas(s: scenes.Scene, W: int, H: int) -> dict[str, float]:
    out = {}
    for z in scenes.SIZES:
        t = scenes.Scene(
            **{
                **s.to_dict(),
                "size": z,
                "diam": scenes.SIZE_FRAC[z],
                "position": "center",
                "jx": 0.0,
                "jy": 0.0,
            }
        )
        out[z] = float(scenes.render_mask(t, W, H).sum())
    return out


def score(img_pil: Image.Image, s: scenes.Scene, clf: ShapeNet) -> dict:
    img = np.asarray(img_pil.convert("RGB"), dtype=np.float32)
    H, W, _ = img.shape
    gradient = len(s.bg) == 2
    a = analyse(img, gradient)
    res = {}
    if gradient:
        res["bg"] = bool(
            scenes.COLOR_NAMES[nearest_color(a["top"])] == s.bg[0]
            and scenes.COLOR_NAMES[nearest_color(a["bottom"])] == s.bg[1]
        )
    else:
        res["bg"] = bool(scenes.COLOR_NAMES[nearest_color(a["top"])] == s.bg[0])
    m = a["mask"]
    if m.sum() < 4:
        res.update(fg=False, shape=False, position=False, size=False)
        return res
    labels = nearest_color(img[m])
    res["fg"] = bool(scenes.COLOR_NAMES[np.bincount(labels, minlength=len(PALETTE)).argmax()] == s.color)
    with torch.no_grad():
        logits = clf(torch.from_numpy(a["soft"][None, None]))
    res["shape"] = bool(scenes.SHAPES[int(logits.argmax())] == s.shape)
    ys, xs = np.nonzero(m)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    if s.position is not None:
        centers = expected_centers(s, W, H)
        best = min(centers, key=lambda p: (centers[p][0] - cx) ** 2 + (centers[p][1] - cy) ** 2)
        res["position"] = bool(best == s.position)
    if s.size is not None:
        areas = expected_areas(s, W, H)
        area = float(m.sum())
        best = min(areas, key=lambda z: abs(math.log(area / areas[z])))
        res["size"] = bool(best == s.size)
    return res


# ----------------------------------------------------------------------------- generation
def load_pipe(path: str):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
    size: tuple[int, int] = (32, 32),
    batch: int = 16,
) -> list[Image.Image]:
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i : i + batch], seeds[i : i + batch]
        gens = [torch.Generator().manual_seed(s) for s in ss]
        out += pipe(
            ps,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            height=size[0],
            width=size[1],
        ).images
    return out


def summarize(rows: list[dict]) -> dict:
    keys = ["fg", "bg", "shape", "position", "size"]
    out = {"n": len(rows)}
    for k in keys:
        v = [r[k] for r in rows if k in r]
        out[k] = round(100.0 * sum(v) / len(v), 1) if v else None
    return out


def make_grid(pipe, path: str, steps: int, guidance: float, seed: int = 7) -> None:
    prompts = [
        "a large red circle on a blue background",
        "a small yellow star on the left on a purple background",
        "a large green triangle at the top on a white background",
        "a blue square on the right on a red to yellow gradient",
        "a yellow sun at the top on a blue background",
        "a large red house on a green background",
        "a green tree at the bottom on a white background",
        "a white star in the center on a black background",
        "a small orange circle at the bottom on a blue to purple gradient",
        "a large purple triangle on an orange background",
        "a black square on the left on a yellow background",
        "a large blue star on a white to green gradient",
        # held-out combinations (never seen in training)
        "a large red triangle on a blue background",
        "a small yellow circle on the right on a black background",
        "a large green square on an orange background",
        "a blue star at the top on a yellow background",
        "a purple triangle on the left on a white background",
        "a large black circle on a yellow to red gradient",
    ]
    imgs = generate(pipe, prompts, [seed + i for i in range(len(prompts))], steps, guidance)
    T, cols = 160, 6
    rows = math.ceil(len(prompts) / cols)
    cap_h = 44
    grid = Image.new("RGB", (cols * T, rows * (T + cap_h)), (255, 255, 255))
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:
        font = ImageFont.load_default()
    d = ImageDraw.Draw(grid)
    for i, (p, im) in enumerate(zip(prompts, imgs, strict=False)):
        x, y = (i % cols) * T, (i // cols) * (T + cap_h)
        grid.paste(im.resize((T - 8, T - 8), Image.LANCZOS), (x + 4, y + 4))
        words, lines, cur = p.split(), [], ""
        for w in words:
            if len(cur) + len(w) + 1 > 26:
                lines.append(cur)
                cur = w
            else:
                cur = (cur + " " + w).strip()
        lines.append(cur)
        for j, ln in enumerate(lines[:3]):
            d.text((x + 4, y + T + j * 13), ln, fill=(0, 0, 0) if i < 12 else (150, 0, 0), font=font)
    grid.save(path)
    print(f"wrote {path} (last row, red captions: held-out combinations)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "builtin"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=6.0, help="the catalog default")
    ap.add_argument("--seed", type=int, default=1000, help="image i of a set uses seed + i")
    ap.add_argument("--sets", default="heldout,fixed")
    ap.add_argument(
        "--limit", type=int, default=0, help="only the first N prompts of each set (quick checks)"
    )
    ap.add_argument("--renders", action="store_true", help="score true renders instead (checks the measures)")
    ap.add_argument(
        "--grid", default=None, help="write a sample grid PNG here (e.g. docs/builtin-samples.png)"
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    clf = load_classifier()
    pipe = None if args.renders else load_pipe(args.model)
    sets = {"heldout": scenes.heldout_prompts(), "fixed": scenes.fixed_prompts()}
    results = {}
    t0 = time.time()
    for name in args.sets.split(","):
        sc = sets[name][: args.limit] if args.limit else sets[name]
        if args.renders:
            imgs = [scenes.render(s, 32, 32) for s in sc]
        else:
            imgs = generate(
                pipe,
                [s.caption() for s in sc],
                [args.seed + i for i in range(len(sc))],
                args.steps,
                args.guidance,
            )
        rows = [score(im, s, clf) for im, s in zip(imgs, sc, strict=False)]
        results[name] = summarize(rows)
        # per-position breakdown (held-out set)
        if name == "heldout":
            for p in scenes.POSITIONS:
                sub = [r for r, s in zip(rows, sc, strict=False) if s.position == p]
                results[name][f"position[{p}]"] = summarize(sub)["position"]
    elapsed = time.time() - t0

    src = (
        "true renders"
        if args.renders
        else f"{args.model}, {args.steps} steps, guidance {args.guidance}, seeds {args.seed}+i"
    )
    print(f"\nEvaluation of {src} ({elapsed:.0f} s)\n")
    print("| set | n | fg colour | bg colour | shape | position | size |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = ["-" if r[k] is None else f"{r[k]:.1f} %" for k in ("fg", "bg", "shape", "position", "size")]
        print(f"| {name} | {r['n']} | " + " | ".join(cells) + " |")
    if "heldout" in results:
        r = results["heldout"]
        print(
            "\nheld-out position accuracy by prompted position: "
            + ", ".join(f"{p} {r[f'position[{p}]']} %" for p in scenes.POSITIONS)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(results=results, args=vars(args), seconds=round(elapsed, 1)), f, indent=2)
    if args.grid and pipe is not None:
        make_grid(pipe, args.grid, args.steps, args.guidance)


if __name__ == "__main__":
    main()
