from __future__ import annotations

import pytest

from easel.domain.sizes import ASPECT_RATIOS, SIZE_PRESETS, aspect_label, dims_for, parse_wxh


@pytest.mark.parametrize(
    ("aspect", "preset", "expected"),
    [
        ("1:1", "thumbnail", (256, 256)),
        ("16:9", "large", (1440, 808)),  # 810 rounds to the nearest multiple of 8
        ("9:16", "medium", (576, 1024)),
        ("21:9", "small", (512, 216)),
        ("4:5", "thumbnail", (208, 256)),
    ],
)
def test_preset_names_the_long_side(aspect: str, preset: str, expected: tuple[int, int]) -> None:
    assert dims_for(aspect, SIZE_PRESETS[preset], 8) == expected


@pytest.mark.parametrize("aspect", list(ASPECT_RATIOS))
def test_every_ratio_keeps_its_shape_and_multiple(aspect: str) -> None:
    w, h = dims_for(aspect, 1024, 8)
    aw, ah = ASPECT_RATIOS[aspect]
    assert max(w, h) == 1024
    assert w % 8 == 0 and h % 8 == 0
    assert abs(w / h - aw / ah) < 0.02
    assert aspect_label(w, h) == aspect


def test_parse_wxh() -> None:
    assert parse_wxh("1792x1024") == (1792, 1024)
    assert parse_wxh(" 64 X 96 ") == (64, 96)
    for bad in ("auto", "1024", "1024x", "x1024", "-5x10", "1e3x10"):
        assert parse_wxh(bad) is None


def test_unnamed_ratio_is_reduced() -> None:
    assert aspect_label(300, 200) == "3:2"
    assert aspect_label(100, 700) == "1:7"
