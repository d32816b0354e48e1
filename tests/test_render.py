"""The renderer against the spec in DESIGN.md ("The shapes world"), pixel by pixel.

Small masks are pinned from hand counts; every size 12..24 is also checked against an
independent point-in-shape test written from the spec's formulas (exact fractions).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from thinkdraw.world.layout import max_size_for, random_layout
from thinkdraw.world.render import WorldObject, boxes_apart, render, render_image, shape_mask
from thinkdraw.world.spec import BACKGROUND, CANVAS, COLORS, PLURALS, SHAPES, article, noun

# Copied from DESIGN.md on purpose: a change in spec.py must fail here.
SPEC_COLORS = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (250, 230, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "purple": (130, 40, 170),
    "pink": (250, 140, 200),
    "brown": (120, 70, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
SIZES = range(12, 25)


def columns(mask: np.ndarray, row: int) -> list[int]:
    return np.flatnonzero(mask[row]).tolist()


def row_widths(mask: np.ndarray) -> list[int]:
    return mask.sum(axis=1).tolist()


# --- the spec's vocabulary -----------------------------------------------------------


def test_vocabulary_matches_design():
    assert CANVAS == 64
    assert BACKGROUND == (128, 128, 128)
    assert COLORS == SPEC_COLORS
    assert list(COLORS) == list(SPEC_COLORS)  # GenEval's order
    assert SHAPES == ("circle", "square", "triangle", "diamond", "cross", "star")
    assert [PLURALS[s] for s in SHAPES] == ["circles", "squares", "triangles", "diamonds", "crosses", "stars"]
    assert (article("orange"), article("red"), article("circle")) == ("an", "a", "a")
    assert (noun("cross", 1), noun("cross", 2)) == ("cross", "crosses")


# --- hand-computed masks at s = 12 (pixel centres at +0.5, c = (6, 6), r = 6) ----------


def test_square_fills_its_box():
    for s in SIZES:
        assert shape_mask("square", s).all()
        assert shape_mask("square", s).shape == (s, s)


def test_circle_12_by_hand():
    # Half-integer offsets d = 0.5..5.5 from the centre; a row at |dy| keeps |dx| with dx^2 <= 36 - dy^2:
    # |dy| 0.5, 1.5 -> 12; 2.5, 3.5 -> 10; 4.5 -> 8; 5.5 -> 4; total 2 * 56 = 112.
    mask = shape_mask("circle", 12)
    assert mask.sum() == 112
    assert row_widths(mask) == [4, 8, 10, 10, 12, 12, 12, 12, 10, 10, 8, 4]
    assert columns(mask, 0) == [4, 5, 6, 7]
    assert columns(mask, 2) == list(range(1, 11))
    assert (mask == mask.T).all() and (mask == mask[::-1]).all() and (mask == mask[:, ::-1]).all()


def test_circle_13_by_hand():
    # Integer offsets -6..6, r^2 = 42.25: rows |dy| 0..2 -> 13, 3 -> 11, 4 -> 11, 5 -> 9, 6 -> 5.
    mask = shape_mask("circle", 13)
    assert row_widths(mask) == [5, 9, 11, 11, 13, 13, 13, 13, 13, 11, 11, 9, 5]
    assert mask.sum() == 137


def test_triangle_12_by_hand():
    # Apex (6, 0), base (0, 12)-(12, 12): the row with centre y keeps |x - 6| <= y / 2.
    # Row 0 (y = 0.5) keeps |x - 6| <= 0.25: no half-integer centre fits, so the apex row is empty.
    mask = shape_mask("triangle", 12)
    assert row_widths(mask) == [0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12]
    assert columns(mask, 1) == [5, 6]  # the first painted row, centred under the apex
    assert columns(mask, 11) == list(range(12))  # the base row spans the box
    assert mask.sum() == 72
    assert (mask == mask[:, ::-1]).all()


def test_diamond_12_and_13_by_hand():
    # |dx| + |dy| <= 6 is reached exactly on the middle rows (0.5 + 5.5 = 6): <= must include them.
    mask = shape_mask("diamond", 12)
    assert row_widths(mask) == [2, 4, 6, 8, 10, 12, 12, 10, 8, 6, 4, 2]
    assert columns(mask, 0) == [5, 6]
    assert columns(mask, 5) == list(range(12))
    assert mask.sum() == 84
    # s = 13: integer offsets, |dx| + |dy| <= 6.5; a single pixel at the top.
    mask13 = shape_mask("diamond", 13)
    assert row_widths(mask13) == [1, 3, 5, 7, 9, 11, 13, 11, 9, 7, 5, 3, 1]
    assert columns(mask13, 0) == [6]


def test_cross_12_by_hand():
    # |dx| <= s/6 = 2 holds for dx in {+-0.5, +-1.5}: arms exactly 4 pixels wide.
    mask = shape_mask("cross", 12)
    assert columns(mask, 0) == [4, 5, 6, 7]
    assert columns(mask, 11) == [4, 5, 6, 7]
    assert np.flatnonzero(mask[:, 0]).tolist() == [4, 5, 6, 7]
    assert row_widths(mask) == [4, 4, 4, 4, 12, 12, 12, 12, 4, 4, 4, 4]
    assert mask.sum() == 4 * 12 * 2 - 16


def test_cross_arm_width_every_size():
    # Arm width = number of pixel centres with |dx| <= s/6.
    for s in SIZES:
        expected = sum(1 for i in range(s) if abs(Fraction(2 * i + 1, 2) - Fraction(s, 2)) <= Fraction(s, 6))
        assert shape_mask("cross", s)[0].sum() == expected, s
    assert [int(shape_mask("cross", s)[0].sum()) for s in (12, 13, 18, 24)] == [4, 5, 6, 8]


# --- the star: one point up, mirror symmetric -------------------------------------------


def star_reference(size: int) -> np.ndarray:
    """Star by a different method: a ray from the centre meets one edge; inside is the centre's side."""
    r = size / 2
    vertices = [
        (r + (r if k % 2 == 0 else r / 2) * math.cos(-math.pi / 2 + k * math.pi / 5),
         r + (r if k % 2 == 0 else r / 2) * math.sin(-math.pi / 2 + k * math.pi / 5))
        for k in range(10)
    ]  # fmt: skip
    mask = np.zeros((size, size), dtype=bool)
    for py in range(size):
        for px in range(size):
            x, y = px + 0.5 - r, py + 0.5 - r
            angle = (math.atan2(y, x) + math.pi / 2) % (2 * math.pi)
            k = int(angle // (math.pi / 5)) % 10
            (ax, ay), (bx, by) = vertices[k], vertices[(k + 1) % 10]
            ax, ay, bx, by = ax - r, ay - r, bx - r, by - r
            side_point = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
            side_centre = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
            mask[py, px] = side_point * side_centre >= 0
    return mask


@pytest.mark.parametrize("size", SIZES)
def test_star_matches_independent_reference(size):
    assert (shape_mask("star", size) == star_reference(size)).all()


@pytest.mark.parametrize(
    ("size", "count", "top_row", "top_cols", "bottom_row", "bottom_cols"),
    [
        (12, 48, 1, [5, 6], 9, [3, 4, 7, 8]),
        (17, 107, 0, [8], 14, [4, 12]),
        (24, 210, 1, [11, 12], 20, [5, 6, 17, 18]),
    ],
)
def test_star_one_point_up(size, count, top_row, top_cols, bottom_row, bottom_cols):
    mask = shape_mask("star", size)
    rows = np.flatnonzero(mask.any(axis=1))
    assert mask.sum() == count
    assert (rows[0], rows[-1]) == (top_row, bottom_row)
    # The top point: one narrow run centred on the box's vertical axis.
    assert columns(mask, top_row) == top_cols
    assert sum(top_cols) * 2 == len(top_cols) * (size - 1)
    # The two lower points: two separate runs, and nothing below them (lower tips at 0.905 s).
    assert columns(mask, bottom_row) == bottom_cols
    assert not mask[rows[-1] + 1 :].any()
    assert rows[-1] < 0.905 * size


@pytest.mark.parametrize("size", SIZES)
def test_star_mirror_symmetric_and_point_up(size):
    mask = shape_mask("star", size)
    assert (mask == mask[:, ::-1]).all()
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows[0] <= 1  # the top point reaches the top edge
    assert mask[rows[0]].sum() <= 2
    # Upside down it would not be the same shape.
    assert not (mask == mask[::-1]).all()


# --- every size against the spec's formulas, in exact arithmetic ----------------------


def spec_inside(shape: str, size: int, px: int, py: int) -> bool:
    x, y = Fraction(2 * px + 1, 2), Fraction(2 * py + 1, 2)
    c, r = Fraction(size, 2), Fraction(size, 2)
    dx, dy = x - c, y - c
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return True
    if shape == "triangle":
        # Inside the three half-planes of apex (c, 0), (0, s), (s, s).
        return y <= size and 2 * x + y >= size and 2 * x - y <= size
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r
    if shape == "cross":
        return abs(dx) <= Fraction(size, 6) or abs(dy) <= Fraction(size, 6)
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "diamond", "cross"])
def test_rational_shapes_match_spec_every_size(shape):
    for s in SIZES:
        expected = np.array([[spec_inside(shape, s, px, py) for px in range(s)] for py in range(s)])
        assert (shape_mask(shape, s) == expected).all(), (shape, s)


def test_masks_are_read_only():
    with pytest.raises(ValueError):
        shape_mask("circle", 12)[0, 0] = True


# --- colours, placement, errors -----------------------------------------------------------


def test_render_colours_and_background_exact():
    objects = [
        WorldObject("square", "red", 0, 0, 12),
        WorldObject("square", "white", 50, 50, 14),
        WorldObject("circle", "blue", 20, 30, 12),
    ]
    image = render(objects)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [220, 30, 30]
    assert image[11, 11].tolist() == [220, 30, 30]
    assert image[12, 12].tolist() == [128, 128, 128]
    assert image[63, 63].tolist() == [245, 245, 245]
    assert image[49, 49].tolist() == [128, 128, 128]
    # The circle's mask lands at (x0, y0) = (20, 30): row 30 paints columns 24..27 only.
    assert np.flatnonzero((image[30] == (30, 70, 230)).all(axis=1)).tolist() == [24, 25, 26, 27]
    painted = (image != BACKGROUND).any(axis=2)
    assert painted.sum() == 144 + 196 + 112
    # Every colour, exact.
    for color, rgb in SPEC_COLORS.items():
        pixels = render([WorldObject("square", color, 10, 10, 12)])
        assert pixels[15, 15].tolist() == list(rgb)
        assert set(map(tuple, pixels.reshape(-1, 3).tolist())) == {rgb, (128, 128, 128)}


def test_render_image_is_rgb_pil():
    image = render_image([WorldObject("diamond", "green", 5, 5, 12)])
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((0, 0)) == (128, 128, 128)
    assert image.getpixel((10, 11)) == (30, 160, 50)  # the diamond's centre (5 + 5, 5 + 6)


def test_empty_scene_is_background():
    assert (render([]) == 128).all()


@pytest.mark.parametrize(
    "obj",
    [
        WorldObject("circle", "red", -1, 0, 12),
        WorldObject("circle", "red", 0, -1, 12),
        WorldObject("circle", "red", 53, 0, 12),  # 53 + 12 = 65 > 64
        WorldObject("circle", "red", 0, 41, 24),  # 41 + 24 = 65
        WorldObject("circle", "red", 0, 0, 11),
        WorldObject("circle", "red", 0, 0, 25),
        WorldObject("hexagon", "red", 0, 0, 12),
        WorldObject("circle", "teal", 0, 0, 12),
    ],
)
def test_bad_objects_raise(obj):
    with pytest.raises(ValueError):
        render([obj])


def test_edge_of_canvas_is_allowed():
    image = render([WorldObject("square", "black", 52, 40, 12), WorldObject("square", "pink", 0, 0, 24)])
    assert image[63, 63].tolist() == [128, 128, 128]  # y 40..51 only
    assert image[51, 63].tolist() == [15, 15, 15]
    assert image[23, 23].tolist() == [250, 140, 200]


def test_unknown_shape_mask_raises():
    with pytest.raises(ValueError):
        shape_mask("hexagon", 12)


def test_boxes_apart():
    a = (0, 0, 12, 12)
    assert boxes_apart(a, (14, 0, 26, 12))  # two empty columns (12, 13) between them
    assert not boxes_apart(a, (13, 0, 25, 12))  # one empty column
    assert boxes_apart(a, (0, 14, 12, 26))
    assert not boxes_apart(a, (0, 13, 12, 25))
    assert boxes_apart((14, 0, 26, 12), a)  # symmetric
    assert not boxes_apart(a, (13, 13, 25, 25))  # diagonal: one pixel apart on both axes
    assert boxes_apart(a, (14, 13, 26, 25))
    assert not boxes_apart(a, (5, 5, 17, 17))  # overlap


def test_random_layouts_obey_the_spec():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 6)
        objects = random_layout(rng, n)
        assert len(objects) == n
        for i, a in enumerate(objects):
            a.check()
            assert 12 <= a.size <= max_size_for(n)
            for b in objects[i + 1 :]:
                assert boxes_apart(a.box, b.box)
    assert [max_size_for(n) for n in (1, 2, 4, 6, 8, 20)] == [24, 24, 21, 17, 15, 12]


def test_random_layout_is_seeded():
    assert random_layout(random.Random(3), 5) == random_layout(random.Random(3), 5)
    assert random_layout(random.Random(3), 5) != random_layout(random.Random(4), 5)
