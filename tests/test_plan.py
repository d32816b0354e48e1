"""The reasoning plan: its open-vocabulary text form, its grid, its typed errors, its checks, and the world's
side of it (plans of scenes, the check of world words)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.plans import check_plan, read_phrase
from thinkdraw.plan import (
    EmptyPlanError,
    Plan,
    PlanBoxError,
    PlanError,
    PlanObject,
    PlanSyntaxError,
    UnknownWordError,
    draw_plan,
    parse_plan,
    to_grid,
)
from thinkdraw.world.layout import random_layout, solve_layout
from thinkdraw.world.plans import check_world_words, layout_rules, plan_of_scene
from thinkdraw.world.render import WorldObject
from thinkdraw.world.spec import COLORS
from thinkdraw.world.splits import load_split

SCENE = [WorldObject("circle", "red", 10, 15, 18), WorldObject("star", "blue", 40, 6, 18)]


def test_text_format_pinned():
    # 10 -> 156.25, 15 -> 234.375, 28 -> 437.5, 33 -> 515.625, 40 -> 625, 6 -> 93.75, 58 -> 906.25, 24 -> 375.
    # Rounded half up: 437.5 -> 438.
    assert plan_of_scene(SCENE).text() == "red circle (156,234),(438,516); blue star (625,94),(906,375)"
    assert plan_of_scene(SCENE, with_color=False).text() == "circle (156,234),(438,516); star (625,94),(906,375)"


def test_round_trip_on_scenes():
    rng = random.Random(0)
    for _ in range(300):
        objects = random_layout(rng, rng.randint(1, 6))
        for with_color in (True, False):
            plan = plan_of_scene(objects, with_color)
            assert parse_plan(plan.text()) == plan
        plan = plan_of_scene(objects)
        assert [tuple(round(v) for v in o.pixel_box(64)) for o in plan.objects] == [o.box for o in objects]


def test_grid_is_exact_to_invert_for_every_pixel():
    grid = [to_grid((v, v, v, v), 64)[0] for v in range(65)]
    assert grid[:5] == [0, 16, 31, 47, 63] and grid[32] == 500 and grid[64] == 1000
    assert len(set(grid)) == 65  # distinct pixels stay distinct
    for v, g in enumerate(grid):
        back = PlanObject("square", (g, g, g, g)).pixel_box(64)[0]
        assert round(back) == v
        assert abs(back - v) <= 0.5 * 64 / 1000 + 1e-12


def test_parser_tolerates_spacing():
    plan = parse_plan("  red   circle ( 156 , 234 ) , ( 438,516 ) ;star (625,94),(906,375);  ")
    assert plan == Plan((PlanObject("red circle", (156, 234, 438, 516)), PlanObject("star", (625, 94, 906, 375))))


def test_open_vocabulary_phrases():
    plan = parse_plan("red teddy bear (112,40),(540,610); A small wooden chair (600,300),(990,800)")
    assert [o.phrase for o in plan.objects] == ["red teddy bear", "A small wooden chair"]
    assert plan.objects[0].box == (112, 40, 540, 610)
    assert parse_plan(plan.text()) == plan
    assert plan.objects[0].pixel_box(384) == pytest.approx((43.008, 15.36, 207.36, 234.24))


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("", EmptyPlanError, "no objects"),
        (" ; ; ", EmptyPlanError, "no objects"),
        ("red circle (1,2)", PlanSyntaxError, r"plan entry 1 is not"),
        ("circle (0,0),(10,10); red circle (1,2),(3)", PlanSyntaxError, r"plan entry 2"),
        ("(0,0),(10,10)", PlanSyntaxError, "entry 1"),
        ("circle [0,0],[10,10]", PlanSyntaxError, "entry 1"),
        ("circle (0,0),(10,10) and more", PlanSyntaxError, "entry 1"),
        ("circle (10,0),(10,10)", PlanBoxError, r"box \(10,0\),\(10,10\)"),  # x2 <= x1
        ("circle (20,0),(10,10)", PlanBoxError, "entry 1"),
        ("circle (0,10),(10,5)", PlanBoxError, "entry 1"),  # y2 <= y1
        ("circle (0,0),(1001,10)", PlanBoxError, "0-1000 grid"),
        ("circle (-1,0),(10,10)", PlanBoxError, "entry 1"),
    ],
)
def test_typed_errors(text, error, match):
    with pytest.raises(error, match=match) as caught:
        parse_plan(text)
    assert isinstance(caught.value, PlanError) and isinstance(caught.value, ThinkdrawError)


def test_full_grid_box_is_fine():
    assert parse_plan("square (0,0),(1000,1000)").objects[0].pixel_box(64) == (0.0, 0.0, 64.0, 64.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("green hexagon (0,0),(10,10)", "'green hexagon'"),
        ("teal circle (0,0),(10,10)", "'teal circle'"),
        ("circle red (0,0),(10,10)", "entry 1"),
        ("big red circle (0,0),(10,10)", "entry 1"),
        ("Red circle (0,0),(10,10)", "entry 1"),
        ("circle (0,0),(10,10); red teddy bear (20,20),(40,40)", "entry 2: 'red teddy bear'"),
    ],
)
def test_world_words_are_a_world_side_check(text, match):
    plan = parse_plan(text)  # open vocabulary: it parses
    with pytest.raises(UnknownWordError, match=match) as caught:
        check_world_words(plan)
    assert isinstance(caught.value, PlanError)
    assert check_world_words(parse_plan("red circle (0,0),(10,10); star (20,0),(30,10)")).objects[1].phrase == "star"


def test_read_phrase_takes_the_longest_class_and_the_colour_before_it():
    classes = ["bear", "teddy bear", "bench"]
    assert read_phrase("red teddy bear", classes) == ("teddy bear", "red")
    assert read_phrase("a big brown bear", classes) == ("bear", "brown")
    assert read_phrase("bench", classes) == ("bench", None)
    assert read_phrase("blue wooden bench", classes) == ("bench", "blue")
    assert read_phrase("green lamp", classes) == ("green lamp", None)  # no class of the prompt


def test_check_open_vocabulary_plan():
    metadata = {
        "tag": "position",
        "prompt": "a photo of a red teddy bear left of a blue bench",
        "include": [
            {"class": "bench", "count": 1, "color": "blue"},
            {"class": "teddy bear", "count": 1, "color": "red", "position": ["left of", 0]},
        ],
    }
    right = parse_plan("red teddy bear (50,300),(300,700); blue bench (600,300),(950,700)")
    assert check_plan(right, metadata) == check_plan(right, metadata) and check_plan(right, metadata).spatial
    assert check_plan(right, metadata).semantic
    swapped = parse_plan("red teddy bear (600,300),(950,700); blue bench (50,300),(300,700)")
    assert (check_plan(swapped, metadata).semantic, check_plan(swapped, metadata).spatial) == (True, False)
    wrong_colour = parse_plan("green teddy bear (50,300),(300,700); blue bench (600,300),(950,700)")
    assert not check_plan(wrong_colour, metadata).semantic


# --- check_plan -----------------------------------------------------------------------------

LEFT_OF = {
    "tag": "position",
    "include": [{"class": "circle", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}],
    "prompt": "a photo of a cross left of a circle",
}


def test_check_correct_plan_with_relation():
    check = check_plan(parse_plan("cross (0,0),(200,200); circle (500,0),(700,200)"), LEFT_OF)
    assert (check.semantic, check.spatial, check.failures) == (True, True, ())


def test_check_swapped_boxes_fail_spatial_only():
    check = check_plan(parse_plan("cross (500,0),(700,200); circle (0,0),(200,200)"), LEFT_OF)
    assert (check.semantic, check.spatial) == (True, False)
    assert check.failures == ("planned cross (500,0),(700,200) is not left of circle (0,0),(200,200)",)


def test_check_missing_object_fails_semantic_and_leaves_spatial_unchecked():
    check = check_plan(parse_plan("cross (0,0),(200,200)"), LEFT_OF)
    assert (check.semantic, check.spatial) == (False, None)
    assert check.failures == ("expected circle>=1, found 0",)


def test_check_wrong_colour_fails_semantic():
    red = {
        "tag": "colors",
        "include": [{"class": "circle", "count": 1, "color": "red"}],
        "prompt": "a photo of a red circle",
    }
    assert check_plan(parse_plan("red circle (0,0),(300,300)"), red) == check_plan(
        parse_plan("red circle (100,100),(400,400)"), red
    )
    check = check_plan(parse_plan("blue circle (0,0),(300,300)"), red)
    assert (check.semantic, check.spatial) == (False, None)
    assert check.failures == ("expected red circle>=1, found 0 red; and 1 blue",)
    assert not check_plan(parse_plan("circle (0,0),(300,300)"), red).semantic  # a colour left out is not red


def test_check_wrong_count_fails_semantic():
    three = {
        "tag": "counting",
        "include": [{"class": "square", "count": 3}],
        "exclude": [{"class": "square", "count": 4}],
        "prompt": "a photo of three squares",
    }
    boxes = ["(0,0),(200,200)", "(300,0),(500,200)", "(600,0),(800,200)", "(0,300),(200,500)"]
    plan = lambda n: parse_plan("; ".join(f"square {b}" for b in boxes[:n]))  # noqa: E731
    assert check_plan(plan(3), three).semantic
    assert check_plan(plan(2), three).failures == ("expected square>=3, found 2",)
    assert check_plan(plan(4), three).failures == ("expected square<4, found 4",)
    assert check_plan(plan(3), three).spatial is None


def test_check_every_subject_against_every_target():
    two_left = {
        "tag": "complex",
        "include": [{"class": "circle", "count": 1}, {"class": "star", "count": 2, "position": ["left of", 0]}],
        "exclude": [{"class": "star", "count": 3}],
        "prompt": "a photo of two stars left of a circle",
    }
    good = parse_plan("star (0,0),(200,200); star (0,500),(200,700); circle (600,300),(800,500)")
    assert check_plan(good, two_left).spatial is True
    bad = parse_plan("star (0,0),(200,200); star (600,600),(800,800); circle (600,300),(800,500)")
    check = check_plan(bad, two_left)
    assert (check.semantic, check.spatial) == (True, False)
    assert check.failures == ("planned star (600,600),(800,800) is not left of circle (600,300),(800,500)",)


def test_ground_truth_plans_of_the_test_split_pass():
    wrong = []
    for index, record in enumerate(load_split("test")):
        objects = solve_layout(record, random.Random(index))
        check = check_plan(plan_of_scene(objects), record)
        has_relation = any("position" in c for c in record["include"])
        if not check.semantic or check.spatial is not (True if has_relation else None):
            wrong.append((record["prompt"], check))
    assert wrong == []


def test_every_world_scene_keeps_the_layout_rules():
    rng = random.Random(1)
    for _ in range(200):
        assert layout_rules(plan_of_scene(random_layout(rng, rng.randint(1, 6)))) == (1.0, [])


def test_layout_rules_name_each_broken_rule():
    # 16x16, 16x17 and 8x8 pixels; the first two boxes touch (gap 1 < MIN_GAP 2), the third is far
    plan = parse_plan("circle (0,0),(250,250); star (266,0),(516,266); cross (750,750),(875,875)")
    share, broken = layout_rules(plan)
    assert broken == [
        "box 2 is 16x17 pixels, not square",
        "box 3 is 8x8 pixels, outside 12-24",
        "boxes 1 and 2 are closer than 2 pixels",
    ]
    assert share == pytest.approx(1 - 3 / 9)  # 2 rules a box, 1 a pair
    assert layout_rules(parse_plan("circle (0,0),(250,250); star (297,0),(547,250)")) == (1.0, [])  # gap 3


# --- draw_plan ----------------------------------------------------------------------------------


def test_draw_plan_tints_boxes_and_leaves_background():
    plan = parse_plan("red circle (250,250),(750,750); square (0,0),(125,125)")
    image = np.asarray(draw_plan(plan, size=256, palette=COLORS)).astype(int)
    assert image.shape == (256, 256, 3)
    # Box (64, 64)-(192, 192): outline 2 px of the colour, inside the colour at alpha 110/255 over grey.
    tint = [(c * 110 + 128 * 145) / 255 for c in (220, 30, 30)]  # 167.7, 85.7, 85.7
    for x, y in [(150, 150), (100, 180), (180, 100), (66, 189)]:
        assert np.abs(image[y, x] - tint).max() <= 1, (x, y)
    assert image[100, 64].tolist() == [220, 30, 30]
    assert image[100, 65].tolist() == [220, 30, 30]
    assert image[191, 100].tolist() == [220, 30, 30]
    for x, y in [(63, 100), (192, 100), (100, 63), (100, 192), (255, 255), (40, 200)]:
        assert image[y, x].tolist() == [128, 128, 128], (x, y)
    # An uncoloured object is tinted dark grey (60, 60, 60): (60 * 110 + 128 * 145) / 255 = 98.7.
    # Without a palette, PIL's named colours: red is (255, 0, 0).
    assert np.asarray(draw_plan(plan, size=256))[100, 64].tolist() == [255, 0, 0]
    assert np.abs(image[28, 28] - 98.7).max() <= 1
    assert draw_plan(plan, size=128).size == (128, 128)


def test_draw_plan_draws_boxes_under_a_pixel_at_small_sizes():
    # a policy may plan a box 10 grid units wide: 0.64 px on a 64 px canvas, still one pixel on it
    image = draw_plan(parse_plan("red circle (100,100),(110,110)"), size=64)
    assert image.size == (64, 64) and image.getpixel((6, 6)) != image.getpixel((40, 40))
