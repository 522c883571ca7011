"""A benchmark-only backend standing in for an accelerator: a fixed wall time per denoising step spent
without the CPU (time.sleep), and images of the requested size with cheap deterministic content.

    catalog entry:  backend = "simulated", options = { step_seconds = 0.025 }

A pipeline call of S steps takes S x step_seconds of wall time whatever the batch size (an accelerator
runs a batch in parallel): step i ends at start + i x step_seconds, so the little CPU spent making the
pictures (during the first step) is hidden in that time. The picture of a seed is a smooth colour
gradient whose slopes and colours depend on the seed (16 variants per size, made once and cached), so
a PNG of it costs the encoder real work (not a flat colour), though less than a photograph would;
`content = "waves"` (smooth colour waves) costs about three times as much (docs/performance.md).

Nothing here imports Easel at module level except the backend contract, so the launcher
(benchmarks/easel_launch.py) can register it into any Easel source tree, an older checkout included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image

VARIANTS = 16  # pictures per size; seed % VARIANTS picks one
DEFAULT_STEP_SECONDS = 0.025

_cache: dict[tuple[int, int, int, str], Image.Image] = {}
_lock = threading.Lock()


def picture(width: int, height: int, seed: int, content: str = "gradient") -> Image.Image:
    """The deterministic picture of `seed` at width x height (cached per variant). `gradient`: each
    channel a linear ramp across the picture whose slopes and offset depend on the seed (wrapping at
    255, so some variants show bands); `waves`: smooth colour waves, which cost a PNG encoder about three
    times as much (closer to a photograph)."""
    key = (width, height, seed % VARIANTS, content)
    with _lock:
        found = _cache.get(key)
    if found is not None:
        return found
    v = seed % VARIANTS
    if content == "gradient":
        x = np.arange(width, dtype=np.uint16) * 256 // width
        y = np.arange(height, dtype=np.uint16) * 256 // height
        channels = []
        for c in range(3):
            kx, ky = (v >> c) & 1, 1 + ((v >> (c + 1)) & 1)  # slopes 0-1 across, 1-2 down
            channels.append((np.add.outer(y * ky, x * kx) + 37 * (v + c)) & 255)
        pixels = np.stack(channels, axis=-1).astype(np.uint8)
    elif content == "waves":
        fx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
        fy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        angle = v * np.pi / VARIANTS
        t = np.cos(angle) * fx + np.sin(angle) * fy
        r = 255 * (0.5 + 0.5 * np.cos(2 * np.pi * (t + v / VARIANTS)))
        g = 255 * np.clip(t * (0.6 + v / (2 * VARIANTS)) + 0.2 * fy, 0, 1)
        b = 255 * (0.5 + 0.5 * np.sin(3 * np.pi * (fx - fy) + v))
        pixels = np.stack([np.broadcast_to(c, (height, width)) for c in (r, g, b)], axis=-1).astype(np.uint8)
    else:
        raise ValueError(f"unknown content {content!r}; known: gradient, waves")
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    with _lock:
        _cache[key] = image
    return image


def run_steps(
    width: int,
    height: int,
    seeds: Sequence[int],
    steps: int,
    step_seconds: float,
    on_step: Callable[[int, int], bool] = lambda step, total: True,
    content: str = "gradient",
) -> list[Image.Image] | None:
    """The simulated pipeline call: the pictures, or None when `on_step` returned False (stopped)."""
    start = time.monotonic()
    images: list[Image.Image] = []
    for i in range(1, steps + 1):
        if i == 1:
            images = [picture(width, height, s, content) for s in seeds]
        delay = start + i * step_seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not on_step(i, steps):
            return None
    return images


class SimulatedBackend:
    """Easel's Backend contract (engine/backends/base.py) over `run_steps`."""

    def __init__(self, settings: Any = None) -> None:
        self.calls = 0
        self._since = datetime.now(UTC)

    def generate(self, request: Any, on_step: Callable[[int, int], bool]) -> list[Image.Image]:
        from easel.engine.backends.base import Interrupted

        self.calls += 1
        options = request.model.options
        step_seconds = float(options.get("step_seconds", DEFAULT_STEP_SECONDS))
        content = str(options.get("content", "gradient"))
        seeds = [item.seed for item in request.items]
        images = run_steps(
            request.width, request.height, seeds, request.steps, step_seconds, on_step, content
        )
        if images is None:
            raise Interrupted()
        return images

    def load(self, model: Any) -> None:
        return None

    def unload(self, model: Any) -> bool:
        return False

    def loaded(self) -> list[Any]:
        return []


def register() -> None:
    """Make `simulated` a backend name of the Easel that is imported (the launcher's tree)."""
    from easel.engine.backends import register_backend

    register_backend("simulated", SimulatedBackend)


def catalog_text(
    step_seconds: float = DEFAULT_STEP_SECONDS, max_size: int = 1024, content: str = "gradient"
) -> str:
    """A catalog with one model, `simulated` (text to image, 64 to `max_size`, 4 steps by default)."""
    return f"""
default_model = "simulated"

[models.simulated]
backend = "simulated"
source = "simulated"
tasks = ["text-to-image"]
min_size = 64
max_size = {max_size}
multiple_of = 8
max_n = 8
credits_per_image = 0
options = {{ step_seconds = {step_seconds}, content = "{content}" }}

[models.simulated.defaults]
steps = 4
guidance = 1.0
"""
