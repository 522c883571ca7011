"""Output sizes: aspect ratios, size presets and explicit `WxH`, resolved once for every dialect.

A preset names the LONG side of the image (thumbnail 256, small 512, medium 1024, large 1440), so a
preset never produces an image larger than its name promises in either dimension. Both sides are then
rounded to the model's multiple (nearest, never below one multiple).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "3:4": (3, 4),
    "4:3": (4, 3),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "21:9": (21, 9),
}

SIZE_PRESETS: dict[str, int] = {"thumbnail": 256, "small": 512, "medium": 1024, "large": 1440}

_WXH = re.compile(r"^\s*(\d{1,5})\s*[xX\u00d7]\s*(\d{1,5})\s*$")


@dataclass(frozen=True)
class SizeLimits:
    """What one model can produce."""

    min_size: int
    max_size: int
    multiple_of: int


def parse_wxh(value: str) -> tuple[int, int] | None:
    """`"1024x768"` -> (1024, 768); anything else -> None."""
    m = _WXH.match(value)
    return (int(m.group(1)), int(m.group(2))) if m else None


def round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def dims_for(aspect_ratio: str, long_side: int, multiple: int) -> tuple[int, int]:
    """Width and height of an image with this aspect ratio whose long side is `long_side`."""
    aw, ah = ASPECT_RATIOS[aspect_ratio]
    if aw >= ah:
        return round_to_multiple(long_side, multiple), round_to_multiple(long_side * ah / aw, multiple)
    return round_to_multiple(long_side * aw / ah, multiple), round_to_multiple(long_side, multiple)


def aspect_label(width: int, height: int) -> str:
    """The named aspect ratio closest to width:height (within 2 %), else the reduced `w:h`."""
    actual = width / height
    for name, (aw, ah) in ASPECT_RATIOS.items():
        if abs(actual - aw / ah) / (aw / ah) < 0.02:
            return name
    frac = Fraction(width, height)
    return f"{frac.numerator}:{frac.denominator}"


def closest_aspect_ratio(width: int, height: int, allowed: list[str]) -> str:
    """The allowed ratio nearest to width:height on a log scale (so a ratio and its inverse tie)."""
    target = math.log(width / height)
    return min(allowed, key=lambda a: abs(math.log(ASPECT_RATIOS[a][0] / ASPECT_RATIOS[a][1]) - target))
