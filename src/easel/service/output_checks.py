"""The output check (docs/policy.md, "Outputs"): a callable every worker runs on each image before it is
stored, which may refuse it. `EASEL_OUTPUT_CHECK` names a factory as `module:function`; the factory gets
the Settings and returns the check, `check(image, spec) -> reason or None`. A refused image fails its job
(`output_rejected`, the reason in the message) and nothing of the job is stored.

The one shipped here needs no downloaded weights: `easel.service.output_checks:phash_blocklist`, a
perceptual-hash blocklist of images the operator supplies (`EASEL_OUTPUT_BLOCKLIST_DIR`: PNG, JPEG or
WebP files). An output whose 64-bit DCT hash is within `EASEL_OUTPUT_BLOCKLIST_DISTANCE` bits of one of
theirs is refused: the same picture re-encoded, resized or slightly recoloured still matches.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.Image import Image as PILImage

from easel.domain.spec import GenerationSpec
from easel.imaging import decode_upload
from easel.settings import Settings

log = logging.getLogger(__name__)

OutputCheck = Callable[[PILImage, GenerationSpec], str | None]
HASH_SIDE = 32  # the picture is reduced to this square before its DCT
KEEP = 8  # the lowest KEEP x KEEP frequencies make the 64-bit hash


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m: np.ndarray = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix(HASH_SIDE)


def phash(image: PILImage) -> int:
    """The 64-bit perceptual hash (DCT) of an image: bit i set where frequency i is above the median."""
    small = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:KEEP, :KEEP].flatten()
    median = np.median(low[1:])  # the DC term (overall brightness) does not vote
    bits = 0
    for value in low:
        bits = (bits << 1) | int(value > median)
    return bits


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def phash_blocklist(settings: Settings) -> OutputCheck:
    """The check refusing outputs near an image of EASEL_OUTPUT_BLOCKLIST_DIR."""
    folder = settings.output_blocklist_dir
    if folder is None:
        raise ValueError(
            "EASEL_OUTPUT_CHECK is the phash blocklist but EASEL_OUTPUT_BLOCKLIST_DIR is not set"
        )
    blocked: list[tuple[str, int]] = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            continue
        image, _ = decode_upload(path.read_bytes(), path.name)
        blocked.append((path.name, phash(image)))
    if not blocked:
        raise ValueError(f"EASEL_OUTPUT_BLOCKLIST_DIR {folder} holds no PNG, JPEG or WebP image")
    limit = settings.output_blocklist_distance
    log.info("output check: %d blocklisted images, distance <= %d", len(blocked), limit)

    def check(image: PILImage, spec: GenerationSpec) -> str | None:
        h = phash(image)
        for name, other in blocked:
            if distance(h, other) <= limit:
                return f"it matches the blocklisted image {name}"
        return None

    return check


def load_output_check(settings: Settings) -> OutputCheck | None:
    """The check EASEL_OUTPUT_CHECK names (`module:function`, a factory given the settings), or None."""
    if not settings.output_check:
        return None
    module, _, name = settings.output_check.partition(":")
    if not module or not name:
        raise ValueError(f"EASEL_OUTPUT_CHECK must be module:function, not {settings.output_check!r}")
    factory = getattr(importlib.import_module(module), name)
    check = factory(settings)
    if not callable(check):
        raise ValueError(f"EASEL_OUTPUT_CHECK {settings.output_check} did not return a callable")
    return check  # type: ignore[no-any-return]
