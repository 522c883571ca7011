"""Synthetic scene generator and caption grammar for Easel's built-in model.

Everything is drawn on the fly with Pillow; no files are needed.

A scene is one object (a basic shape or a simple object) of a colour, a size and a
position, on a plain background or a vertical two-colour gradient.  Its caption
comes from a small grammar:

    a [small|large] [<colour>] <shape> [<position>] [<background>]

    <position>   := on the left | on the right | at the top | at the bottom | in the center
    <background> := on a <colour> background | on a <colour> to <colour> gradient

A gradient "from A to B" runs from colour A at the top edge to colour B at the bottom.
Omitted parts are chosen at random (size: between small and large; colour: random,
a sun tends to be yellow or orange and a tree green; position: near the center;
background: a random plain colour).

Some colour-shape combinations (``HELD_OUT``) never appear in the training split;
they are used only for evaluation.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 160, 50),
    "blue": (30, 80, 220),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOR_NAMES = list(COLORS)
BASIC_SHAPES = ["circle", "square", "triangle", "star"]
OBJECTS = ["sun", "house", "tree"]
SHAPES = BASIC_SHAPES + OBJECTS
SIZES = ["small", "large"]
POSITIONS = ["left", "right", "top", "bottom", "center"]
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
TRUNK = (115, 70, 35)

# Held-out colour-shape combinations: every colour once, every basic shape twice.
HELD_OUT: list[tuple[str, str]] = [
    ("red", "triangle"),
    ("orange", "star"),
    ("yellow", "circle"),
    ("green", "square"),
    ("blue", "star"),
    ("purple", "triangle"),
    ("white", "square"),
    ("black", "circle"),
]
HELD_OUT_SET = set(HELD_OUT)

# Every word the grammar can produce (the tokenizer vocabulary is built from this).
VOCAB_WORDS = sorted(
    set(
        ["a", "an", "on", "the", "at", "in", "to", "background", "gradient"]
        + COLOR_NAMES
        + SHAPES
        + SIZES
        + [w for p in POSITION_PHRASES.values() for w in p.split()]
    )
)

# Object diameter as a fraction of the shorter image side.  Sizes are moderate and
# positioned objects sit close to the edge so that "left" and "center" differ by at
# least a fifth of the image even for a large object (position is then learnable).
SIZE_FRAC = {"small": 0.32, "large": 0.56}
MEDIUM_RANGE = (0.40, 0.48)
EDGE_MARGIN = 0.02


@dataclass
class Scene:
    shape: str
    color: str
    size: str | None  # "small", "large" or None (medium, unstated)
    position: str | None  # one of POSITIONS or None (unstated: near the center)
    bg: tuple[str, ...]  # one colour (plain) or two colours (top-to-bottom gradient)
    say_color: bool = True
    say_size: bool = True
    say_position: bool = True
    say_bg: bool = True
    # layout, filled in by sample_scene: diameter fraction, centre offset jitter
    diam: float = 0.5
    jx: float = 0.0
    jy: float = 0.0

    def caption(self) -> str:
        return caption(self)

    def to_dict(self) -> dict:
        return asdict(self)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(s: Scene) -> str:
    words = []
    if s.say_size and s.size:
        words.append(s.size)
    if s.say_color:
        words.append(s.color)
    words.append(s.shape)
    words.insert(0, article(words[0]))
    if s.say_position and s.position:
        words.append(POSITION_PHRASES[s.position])
    if s.say_bg:
        if len(s.bg) == 1:
            words.append(f"on {article(s.bg[0])} {s.bg[0]} background")
        else:
            words.append(f"on {article(s.bg[0])} {s.bg[0]} to {s.bg[1]} gradient")
    return " ".join(words)


def is_allowed(color: str, shape: str, split: str) -> bool:
    held = (color, shape) in HELD_OUT_SET
    if split == "train":
        return not held
    if split == "heldout":
        return held
    return True


def _pick_bg(rng: random.Random, obj_color: str, gradient_p: float = 0.35) -> tuple[str, ...]:
    others = [c for c in COLOR_NAMES if c != obj_color]
    if rng.random() < gradient_p:
        a, b = rng.sample(others, 2)
        return (a, b)
    return (rng.choice(others),)


def layout(s: Scene, rng: random.Random) -> None:
    """Fill in the diameter and centre jitter of a scene."""
    if s.size in SIZE_FRAC:
        s.diam = SIZE_FRAC[s.size] * rng.uniform(0.92, 1.08)
    else:
        s.diam = rng.uniform(*MEDIUM_RANGE)
    if s.position is None:
        s.jx, s.jy = rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)
    else:
        s.jx, s.jy = rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)


def sample_scene(rng: random.Random, split: str = "train", full_caption: bool = False) -> Scene:
    """Draw a random scene. split: "train" (never a held-out combination), "heldout"
    (only held-out combinations) or "all". full_caption: state every attribute."""
    while True:
        shape = rng.choice(SHAPES) if split != "heldout" else rng.choice(BASIC_SHAPES)
        if shape == "sun" and rng.random() < 0.6:
            color = rng.choice(["yellow", "orange"])
        elif shape == "tree" and rng.random() < 0.6:
            color = "green"
        else:
            color = rng.choice(COLOR_NAMES)
        if is_allowed(color, shape, split):
            break
    say_size = full_caption or rng.random() < 0.75
    size = rng.choice(SIZES) if say_size else None
    say_position = full_caption or rng.random() < 0.9
    position = rng.choice(POSITIONS) if say_position else None
    bg = _pick_bg(rng, color)
    say_color = full_caption or rng.random() < 0.92
    say_bg = full_caption or rng.random() < 0.9
    s = Scene(shape, color, size, position, bg, say_color, say_size, say_position, say_bg)
    layout(s, rng)
    return s


def object_center(s: Scene, width: int, height: int) -> tuple[float, float, float]:
    """Centre (x, y) and diameter of the object in pixels."""
    m = min(width, height)
    d = s.diam * m
    r = d / 2
    margin = EDGE_MARGIN * m
    cx, cy = width / 2, height / 2
    pos = s.position
    if pos == "left":
        cx = r + margin
    elif pos == "right":
        cx = width - r - margin
    elif pos == "top":
        cy = r + margin
    elif pos == "bottom":
        cy = height - r - margin
    cx += s.jx * m
    cy += s.jy * m
    return cx, cy, d


def _star(cx, cy, ro, ri, n=5):
    pts = []
    for k in range(2 * n):
        a = -math.pi / 2 + k * math.pi / n
        rr = ro if k % 2 == 0 else ri
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _shade(c, f):
    return tuple(round(v * f) for v in c)


def draw_object(draw: ImageDraw.ImageDraw, s: Scene, cx: float, cy: float, d: float) -> None:
    col = COLORS[s.color]
    h = d / 2
    if s.shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=col)
    elif s.shape == "square":
        a = 0.44 * d
        draw.rectangle([cx - a, cy - a, cx + a, cy + a], fill=col)
    elif s.shape == "triangle":
        draw.polygon(
            [(cx, cy - 0.5 * d), (cx - 0.52 * d, cy + 0.42 * d), (cx + 0.52 * d, cy + 0.42 * d)], fill=col
        )
    elif s.shape == "star":
        draw.polygon(_star(cx, cy + 0.04 * d, 0.56 * d, 0.23 * d), fill=col)
    elif s.shape == "sun":
        w = max(1, round(0.09 * d))
        for k in range(8):
            a = k * math.pi / 4
            draw.line(
                [
                    (cx + 0.3 * d * math.cos(a), cy + 0.3 * d * math.sin(a)),
                    (cx + 0.5 * d * math.cos(a), cy + 0.5 * d * math.sin(a)),
                ],
                fill=col,
                width=w,
            )
        r = 0.3 * d
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif s.shape == "house":
        roof = _shade(col, 0.6) if s.color != "black" else (90, 90, 90)
        draw.rectangle([cx - 0.38 * d, cy - 0.05 * d, cx + 0.38 * d, cy + 0.45 * d], fill=col)
        draw.polygon(
            [(cx - 0.5 * d, cy - 0.03 * d), (cx, cy - 0.5 * d), (cx + 0.5 * d, cy - 0.03 * d)], fill=roof
        )
    elif s.shape == "tree":
        draw.rectangle([cx - 0.08 * d, cy + 0.05 * d, cx + 0.08 * d, cy + 0.5 * d], fill=TRUNK)
        r = 0.36 * d
        draw.ellipse([cx - r, cy - 0.14 * d - r, cx + r, cy - 0.14 * d + r], fill=col)
    else:
        raise ValueError(s.shape)


def background_array(bg: tuple[str, ...], width: int, height: int) -> np.ndarray:
    top = np.array(COLORS[bg[0]], dtype=np.float32)
    bottom = np.array(COLORS[bg[-1]], dtype=np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    arr = top * (1 - t) + bottom * t
    return np.broadcast_to(arr, (height, width, 3)).copy()


def render(s: Scene, width: int = 32, height: int = 32, supersample: int = 4) -> Image.Image:
    """Render a scene to an RGB image (drawn at `supersample` x and reduced with a box filter)."""
    W, H = width * supersample, height * supersample
    bg = background_array(s.bg, W, H)
    img = Image.fromarray(np.clip(bg + 0.5, 0, 255).astype(np.uint8), "RGB")
    cx, cy, d = object_center(s, width, height)
    draw_object(ImageDraw.Draw(img), s, cx * supersample, cy * supersample, d * supersample)
    if supersample > 1:
        img = img.reduce(supersample)
    return img


def render_mask(s: Scene, width: int = 32, height: int = 32, supersample: int = 4) -> np.ndarray:
    """Coverage (0..1) of the object, same geometry as render()."""
    W, H = width * supersample, height * supersample
    img = Image.new("L", (W, H), 0)
    cx, cy, d = object_center(s, width, height)
    s2 = Scene(**{**s.to_dict(), "color": "white"})
    ImageDraw.Draw(img)
    # draw in white on black: reuse draw_object with a grey-scale image
    rgb = Image.new("RGB", (W, H), (0, 0, 0))
    draw_object(ImageDraw.Draw(rgb), s2, cx * supersample, cy * supersample, d * supersample)
    img = rgb.convert("L")
    if supersample > 1:
        img = img.reduce(supersample)
    return (np.asarray(img, dtype=np.float32) > 60).astype(np.float32)


def scene_from_caption_parts(
    shape: str, color: str, size: str | None, position: str | None, bg: tuple[str, ...], rng: random.Random
) -> Scene:
    s = Scene(shape, color, size, position, tuple(bg), True, size is not None, position is not None, True)
    layout(s, rng)
    return s


def heldout_prompts(seed: int = 1234) -> list[Scene]:
    """The fixed held-out evaluation set: every held-out colour-shape combination at
    every position and both sizes, with a seeded random background (80 scenes)."""
    rng = random.Random(seed)
    out = []
    for color, shape in HELD_OUT:
        for position in POSITIONS:
            for size in SIZES:
                bg = _pick_bg(rng, color, gradient_p=0.3)
                out.append(scene_from_caption_parts(shape, color, size, position, bg, rng))
    return out


def fixed_prompts(n: int = 64, seed: int = 4321) -> list[Scene]:
    """A fixed set of fully-stated scenes from the training distribution."""
    rng = random.Random(seed)
    return [sample_scene(rng, "train", full_caption=True) for _ in range(n)]


def training_batch(
    rng: random.Random, n: int, width: int, height: int, split: str = "train"
) -> tuple[np.ndarray, list[str]]:
    """n scenes rendered to float32 NCHW in [-1, 1] plus their captions."""
    imgs = np.empty((n, 3, height, width), dtype=np.float32)
    caps = []
    for i in range(n):
        s = sample_scene(rng, split)
        a = np.asarray(render(s, width, height), dtype=np.float32)
        imgs[i] = a.transpose(2, 0, 1) / 127.5 - 1.0
        caps.append(s.caption())
    return imgs, caps


if __name__ == "__main__":  # quick look: python training/scenes.py out.png
    import sys

    rng = random.Random(0)
    tiles = []
    for _ in range(16):
        s = sample_scene(rng)
        print(s.caption())
        tiles.append(render(s, 32, 32).resize((96, 96), Image.NEAREST))
    grid = Image.new("RGB", (96 * 4, 96 * 4))
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % 4) * 96, (i // 4) * 96))
    grid.save(sys.argv[1] if len(sys.argv) > 1 else "/tmp/scenes.png")
