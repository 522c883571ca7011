"""Tests for the built-in model's synthetic scene generator (training/scenes.py)."""

import os
import random
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "training"))

import scenes  # noqa: E402

COLOR = "|".join(scenes.COLOR_NAMES)
SHAPE = "|".join(scenes.SHAPES)
GRAMMAR = re.compile(
    rf"^an? (?:(?:small|large) )?(?:(?:{COLOR}) )?(?:{SHAPE})"
    r"(?: (?:on the left|on the right|at the top|at the bottom|in the center))?"
    rf"(?: on an? (?:{COLOR}) (?:background|to (?:{COLOR}) gradient))?$"
)


def test_required_vocabulary():
    for c in ["red", "orange", "yellow", "green", "blue", "purple", "white", "black"]:
        assert c in scenes.COLORS
    for s in ["circle", "square", "triangle", "star", "sun", "house", "tree"]:
        assert s in scenes.SHAPES
    assert set(scenes.SIZES) == {"small", "large"}
    assert set(scenes.POSITIONS) == {"left", "right", "top", "bottom", "center"}


def test_captions_follow_grammar_and_use_only_vocabulary():
    rng = random.Random(0)
    vocab = set(scenes.VOCAB_WORDS)
    for split in ["train", "all", "heldout"]:
        for _ in range(500):
            cap = scenes.sample_scene(rng, split).caption()
            assert GRAMMAR.match(cap), cap
            assert set(cap.split()) <= vocab, cap


def test_caption_states_scene():
    s = scenes.Scene("circle", "red", "large", "left", ("blue",))
    assert s.caption() == "a large red circle on the left on a blue background"
    s = scenes.Scene("star", "orange", None, None, ("red", "yellow"), say_size=False, say_position=False)
    assert s.caption() == "an orange star on a red to yellow gradient"


def test_heldout_split_is_disjoint_from_training():
    held = set(scenes.HELD_OUT)
    assert len(held) == len(scenes.HELD_OUT) >= 8
    assert {c for c, _ in held} == set(scenes.COLOR_NAMES)  # every colour held out once
    rng = random.Random(1)
    for _ in range(5000):
        s = scenes.sample_scene(rng, "train")
        assert (s.color, s.shape) not in held
    for s in scenes.heldout_prompts():
        assert (s.color, s.shape) in held
    rng = random.Random(2)
    for _ in range(200):
        s = scenes.sample_scene(rng, "heldout")
        assert (s.color, s.shape) in held


def test_background_never_matches_object():
    rng = random.Random(3)
    for _ in range(2000):
        s = scenes.sample_scene(rng, "all")
        assert s.color not in s.bg
        assert len(set(s.bg)) == len(s.bg)


@pytest.mark.parametrize("size", [(32, 32), (32, 56), (48, 32)])
def test_render_is_deterministic_for_a_seed(size):
    w, h = size
    a = scenes.training_batch(random.Random(42), 8, w, h)
    b = scenes.training_batch(random.Random(42), 8, w, h)
    assert a[1] == b[1]
    assert np.array_equal(a[0], b[0])
    assert a[0].shape == (8, 3, h, w)
    assert a[0].min() >= -1.0 and a[0].max() <= 1.0
    c = scenes.training_batch(random.Random(43), 8, w, h)
    assert not np.array_equal(a[0], c[0])


def test_position_moves_the_object():
    rng = random.Random(5)
    cents = {}
    for p in scenes.POSITIONS:
        s = scenes.scene_from_caption_parts("circle", "red", "small", p, ("blue",), rng)
        m = scenes.render_mask(s, 32, 32)
        ys, xs = np.nonzero(m)
        cents[p] = (xs.mean(), ys.mean())
    assert cents["left"][0] < cents["center"][0] - 6 < cents["right"][0] - 12
    assert cents["top"][1] < cents["center"][1] - 6 < cents["bottom"][1] - 12


def test_gradient_runs_top_to_bottom():
    s = scenes.Scene("circle", "white", "small", "left", ("red", "yellow"))
    img = np.asarray(scenes.render(s, 32, 32), dtype=int)
    assert np.abs(img[0, -1] - np.array(scenes.COLORS["red"])).max() < 12
    assert np.abs(img[-1, -1] - np.array(scenes.COLORS["yellow"])).max() < 12
