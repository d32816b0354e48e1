"""GenEval's rules (PAPERS.md section E), on hand-built detection lists.

Every expected verdict, reason string and relation set below is computed by hand from the
official evaluate_images.py rules: threshold `score > 0.3` (0.9 on counting), 16 per class,
the `count` most confident per include clause, exclude at `>= count`, position margin 0.1.
"""

from __future__ import annotations

import pytest

from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.rules import Failure, group_detections, judge, relations, validate_metadata
from thinkdraw.world.spec import SHAPES


def det(label: str, box=(0, 0, 10, 10), score: float = 1.0, color: str | None = None) -> Detection:
    return Detection(label, tuple(float(v) for v in box), score, color)


def meta(tag: str, include: list[dict], exclude: list[dict] | None = None, prompt: str = "p") -> dict:
    record = {"tag": tag, "include": include, "prompt": prompt}
    if exclude is not None:
        record["exclude"] = exclude
    return record


CIRCLE = meta("single_object", [{"class": "circle", "count": 1}])


# --- thresholds -------------------------------------------------------------------------


def test_threshold_is_strict():
    dropped = judge(CIRCLE, [det("circle", score=0.3)])
    assert not dropped.correct
    assert dropped.failures == (Failure("count", 0, "expected circle>=1, found 0"),)
    assert dropped.reason == "expected circle>=1, found 0"
    assert dropped.detections == {}
    kept = judge(CIRCLE, [det("circle", score=0.3001)])
    assert kept.correct and kept.failures == () and kept.reason == ""
    assert [d.score for d in kept.detections["circle"]] == [0.3001]


COUNTING = meta("counting", [{"class": "square", "count": 2}], [{"class": "square", "count": 3}])


def test_counting_threshold_is_strict_0_9():
    squares = [det("square", (0, 0, 10, 10), 0.95), det("square", (20, 0, 30, 10), 0.9)]
    verdict = judge(COUNTING, squares)
    assert verdict.failures == (Failure("count", 0, "expected square>=2, found 1"),)
    squares[1] = det("square", (20, 0, 30, 10), 0.95)
    assert judge(COUNTING, squares).correct
    # A third square at exactly 0.9 is dropped, so the exclude clause does not see it ...
    assert judge(COUNTING, squares + [det("square", (40, 0, 50, 10), 0.9)]).correct
    # ... at 0.95 it counts and the image has one square too many.
    verdict = judge(COUNTING, squares + [det("square", (40, 0, 50, 10), 0.95)])
    assert verdict.failures == (Failure("exclude", 0, "expected square<3, found 3"),)


def test_other_tags_use_0_3_even_with_an_exclude_clause():
    squares = [det("square", (0, 0, 10, 10), 0.5), det("square", (20, 0, 30, 10), 0.5)]
    for tag in ("single_object", "two_object", "colors", "position", "color_attr", "complex", "indirect"):
        record = {**COUNTING, "tag": tag}
        assert judge(record, squares).correct, tag
        assert not judge(record, squares + [det("square", (40, 0, 50, 10), 0.31)]).correct, tag


def test_group_detections_threshold_cap_and_order():
    dets = [det("circle", (i, 0, i + 1, 1), 0.40 + 0.01 * i) for i in range(20)] + [det("star", score=0.3)]
    grouped = group_detections(dets, "two_object")
    assert list(grouped) == ["circle"]  # the star at 0.3 is dropped, and no empty lists are kept
    assert len(grouped["circle"]) == 16
    assert [round(d.score, 2) for d in grouped["circle"]] == [round(0.59 - 0.01 * i, 2) for i in range(16)]
    assert len(group_detections(dets, "counting")) == 0


def test_at_most_16_per_class():
    circles = [det("circle", (3 * i, 0, 3 * i + 2, 2), 0.9 - 0.01 * i) for i in range(17)]
    assert judge(
        meta("single_object", [{"class": "circle", "count": 1}], [{"class": "circle", "count": 17}]), circles
    ).correct
    verdict = judge(
        meta("single_object", [{"class": "circle", "count": 1}], [{"class": "circle", "count": 16}]), circles
    )
    assert verdict.failures == (Failure("exclude", 0, "expected circle<16, found 16"),)
    assert len(verdict.detections["circle"]) == 16
    assert min(d.score for d in verdict.detections["circle"]) == pytest.approx(0.75)  # the 17th (0.74) is cut


def test_include_needs_count_and_exclude_fires_at_count():
    two = meta(
        "two_object", [{"class": "circle", "count": 1}, {"class": "star", "count": 1}], [{"class": "cross", "count": 2}]
    )
    ok = [det("circle"), det("star", (20, 0, 30, 10))]
    assert judge(two, ok).correct
    assert judge(two, ok + [det("cross", (40, 0, 50, 10))]).correct  # one cross < 2
    verdict = judge(two, ok + [det("cross", (40, 0, 50, 10)), det("cross", (40, 20, 50, 30))])
    assert verdict.failures == (Failure("exclude", 0, "expected cross<2, found 2"),)
    missing = judge(two, [det("star")])
    assert missing.failures == (Failure("count", 0, "expected circle>=1, found 0"),)
    both = judge(meta("counting", [{"class": "circle", "count": 3}]), [det("circle", score=0.95)] * 2)
    assert both.reason == "expected circle>=3, found 2"


# --- colour clauses -----------------------------------------------------------------------

RED_CIRCLE = meta("colors", [{"class": "circle", "count": 1, "color": "red"}])


def test_colour_clause_looks_at_the_count_most_confident_only():
    dets = [
        det("circle", (0, 0, 10, 10), 0.5, "red"),
        det("circle", (20, 0, 30, 10), 0.5, "red"),
        det("circle", (40, 0, 50, 10), 0.9, "blue"),
    ]
    verdict = judge(RED_CIRCLE, dets)
    assert not verdict.correct
    assert verdict.failures == (Failure("color", 0, "expected red circle>=1, found 0 red; and 1 blue"),)
    two_red = meta("colors", [{"class": "circle", "count": 2, "color": "red"}])
    assert judge(two_red, dets).reason == "expected red circle>=2, found 1 red; and 1 red, 1 blue"
    # The most confident is red: the lower-ranked blue does not matter.
    assert judge(RED_CIRCLE, [det("circle", score=0.9, color="red"), det("circle", score=0.5, color="blue")]).correct


def test_colour_classifier_sees_only_the_chosen_detections():
    seen = []

    def colors_of(dets):
        seen.append([d.score for d in dets])
        return ["red"] * len(dets)

    dets = [det("circle", score=s) for s in (0.4, 0.8, 0.6)]
    assert judge(RED_CIRCLE, dets, colors_of).correct
    assert seen == [[0.8]]
    seen.clear()
    judge(CIRCLE, dets, colors_of)  # no colour clause: no colour call
    assert seen == []


def test_colour_reason_lists_colours_in_geneval_order():
    dets = [det("square", score=0.9 - 0.1 * i, color=c) for i, c in enumerate(["white", "blue", "red", "blue"])]
    verdict = judge(meta("colors", [{"class": "square", "count": 4, "color": "green"}]), dets)
    assert verdict.reason == "expected green square>=4, found 0 green; and 1 red, 2 blue, 1 white"


# --- the position rule ------------------------------------------------------------------------

BOX = (0, 0, 10, 10)


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        ((20, 0, 30, 10), {"left of"}),  # offset (-20, 0): revised -18 / 20 = -0.9
        ((-20, 0, -10, 10), {"right of"}),
        ((0, 20, 10, 30), {"above"}),
        ((0, -20, 10, -10), {"below"}),
        ((20, 20, 30, 30), {"left of", "above"}),  # (-18, -18) / 28.28 = -0.64 on both axes
        ((-20, -20, -10, -10), {"right of", "below"}),
        ((20, 5, 30, 15), {"left of"}),  # (-18, -3) / 20.62: dx -0.87, dy -0.15
        ((1, 1, 11, 11), set()),  # offset (-1, -1) inside the 2 px margin on both axes
        ((2, 2, 12, 12), set()),  # offset (-2, -2): revised exactly 0
        ((3, 3, 13, 13), set()),  # (-1, -1) / 4.24 = -0.24 (without the margin it would be -0.71)
        ((4, 0, 14, 10), set()),  # (-4 + 2) / 4 = -0.5 exactly: not left of (strict)
        ((5, 0, 15, 10), {"left of"}),  # -3 / 5 = -0.6
        ((4.02, 0, 14.02, 10), {"left of"}),  # just past: -2.02 / 4.02 = -0.5025
        ((3.98, 0, 13.98, 10), set()),  # just under: -1.98 / 3.98 = -0.4975
        ((10, 2, 20, 12), {"left of"}),  # offset (-10, -2): y zeroed by the margin, x -8 / 10.2
    ],
)
def test_relations_by_hand(b, expected):
    assert relations(BOX, b) == expected


def test_margin_scales_with_both_boxes():
    # a 10 wide, b 30 wide: margin 0.1 * 40 = 4 on x. Offset -8: (-8 + 4) / 8 = -0.5, not left of.
    assert relations((0, 0, 10, 10), (-2, -10, 28, 20)) == set()
    # Offset -8.5: -4.5 / 8.5 = -0.53.
    assert relations((0, 0, 10, 10), (-1.5, -10, 28.5, 20)) == {"left of"}


LEFT_OF = meta(
    "position", [{"class": "circle", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}]
)


def test_position_clause():
    assert judge(LEFT_OF, [det("cross", (0, 0, 10, 10)), det("circle", (20, 0, 30, 10))]).correct
    assert judge(LEFT_OF, [det("cross", (0, 0, 10, 10)), det("circle", (20, 20, 30, 30))]).correct  # diagonal
    swapped = judge(LEFT_OF, [det("cross", (20, 0, 30, 10)), det("circle", (0, 0, 10, 10))])
    assert swapped.failures == (Failure("position", 1, "expected cross left of target, found right of target"),)
    diagonal = judge(LEFT_OF, [det("cross", (20, 20, 30, 30)), det("circle", (0, 0, 10, 10))])
    assert diagonal.reason == "expected cross left of target, found below and right of target"
    close = judge(LEFT_OF, [det("cross", (1, 1, 11, 11)), det("circle", (0, 0, 10, 10))])
    assert close.reason == "expected cross left of target, found  target"  # the official format, empty set


def test_position_without_target():
    verdict = judge(LEFT_OF, [det("cross")])
    assert verdict.failures == (
        Failure("count", 0, "expected circle>=1, found 0"),
        Failure("position", 1, "no target for cross to be left of"),
    )
    assert verdict.reason == "expected circle>=1, found 0\nno target for cross to be left of"
    # A target clause that fails on colour is no target either.
    coloured = meta(
        "position",
        [{"class": "circle", "count": 1, "color": "red"}, {"class": "cross", "count": 1, "position": ["left of", 0]}],
    )
    verdict = judge(coloured, [det("cross", (0, 0, 10, 10)), det("circle", (20, 0, 30, 10), color="blue")])
    assert [f.kind for f in verdict.failures] == ["color", "position"]
    assert verdict.failures[1].message == "no target for cross to be left of"


def test_position_subject_missing_is_a_count_failure_only():
    verdict = judge(LEFT_OF, [det("circle")])
    assert verdict.failures == (Failure("count", 1, "expected cross>=1, found 0"),)


SQUARES_RIGHT = meta(
    "complex", [{"class": "square", "count": 2}, {"class": "circle", "count": 2, "position": ["left of", 0]}]
)


def test_every_subject_against_every_target():
    squares = [det("square", (40, 0, 50, 10)), det("square", (40, 40, 50, 50))]
    good = [det("circle", (0, 20, 10, 30)), det("circle", (0, 40, 10, 50))]
    assert judge(SQUARES_RIGHT, squares + good).correct
    # One circle between the two squares: one violator fails the clause, reported once, against the first target
    # checked: of the tied squares the one listed last (the official order), which the circle is above.
    bad = [good[0], det("circle", (40, 20, 50, 30), 0.9)]
    verdict = judge(SQUARES_RIGHT, squares + bad)
    assert verdict.failures == (Failure("position", 1, "expected circle left of target, found above target"),)


def test_only_the_matched_targets_count():
    # The target clause takes the single most confident square; a weaker square elsewhere is ignored.
    dets = [
        det("square", (40, 0, 50, 10), 0.9),
        det("square", (0, 40, 10, 50), 0.5),
        det("cross", (10, 0, 20, 10), 0.8),
        det("circle", (50, 50, 60, 60), 0.8),
    ]
    record = meta(
        "position", [{"class": "square", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}]
    )
    assert judge(record, dets).correct
    assert relations((10, 0, 20, 10), (0, 40, 10, 50)) == {"above"}  # it would fail against the weaker one


# --- metadata schema ---------------------------------------------------------------------------

GOOD = {
    "tag": "position",
    "include": [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "star", "count": 2, "position": ["above", 0]},
    ],
    "exclude": [{"class": "star", "count": 3}],
    "prompt": "a photo of two stars above a red circle",
}


def test_valid_metadata_passes_through():
    assert validate_metadata(GOOD) is GOOD
    assert validate_metadata(GOOD, SHAPES) is GOOD
    assert validate_metadata({"tag": "x", "prompt": "y", "include": [{"class": "dog", "count": 1}]})["tag"] == "x"


def clause(**change) -> dict:
    return {**GOOD, "include": [{**GOOD["include"][0], **change}, GOOD["include"][1]]}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ([GOOD], "JSON object"),
        ({k: v for k, v in GOOD.items() if k != "tag"}, "'tag'"),
        ({k: v for k, v in GOOD.items() if k != "prompt"}, "'prompt'"),
        ({**GOOD, "prompt": ""}, "'prompt'"),
        ({k: v for k, v in GOOD.items() if k != "include"}, "'include'"),
        ({**GOOD, "include": []}, "'include'"),
        ({**GOOD, "include": {"class": "circle", "count": 1}}, "'include'"),
        ({**GOOD, "exclude": {"class": "star", "count": 3}}, "'exclude'"),
        ({**GOOD, "include": ["circle"]}, r"include\[0\] must be an object"),
        (clause(**{"class": None}), r"include\[0\] needs a string 'class'"),
        (clause(count="1"), r"include\[0\] needs a positive integer 'count'"),
        (clause(count=1.0), "positive integer"),
        (clause(count=True), "positive integer"),
        (clause(count=0), "positive integer"),
        ({**GOOD, "exclude": [{"class": "star", "count": -1}]}, r"exclude\[0\] needs a positive integer"),
        (clause(color="teal"), "colour 'teal'"),
        (clause(size=3), r"unknown keys \['size'\]"),
        (clause(position=["left of", 1]), r"include\[0\]: position"),  # points at a later clause
        (clause(position=["left of", 0]), r"include\[0\]: position"),  # points at itself
        ({**GOOD, "include": [GOOD["include"][0], {"class": "star", "count": 1, "position": ["near", 0]}]}, "position"),
        ({**GOOD, "include": [GOOD["include"][0], {"class": "star", "count": 1, "position": ["above"]}]}, "position"),
        ({**GOOD, "exclude": [{"class": "star", "count": 3, "position": ["above", 0]}]}, r"exclude\[0\]: position"),
    ],
)
def test_bad_metadata_raises(record, match):
    with pytest.raises(MetadataError, match=match):
        validate_metadata(record)


def test_unknown_class_only_when_classes_given():
    record = {"tag": "single_object", "prompt": "a photo of a dog", "include": [{"class": "dog", "count": 1}]}
    assert validate_metadata(record) is record
    with pytest.raises(MetadataError, match="class 'dog' is not one the detector knows"):
        validate_metadata(record, SHAPES)
    excluded = {**CIRCLE, "exclude": [{"class": "hexagon", "count": 1}]}
    with pytest.raises(MetadataError, match=r"exclude\[0\]: class 'hexagon'"):
        validate_metadata(excluded, SHAPES)


def test_tied_scores_count_the_last_listed_first_as_the_official_code_does():
    # The official code takes np.argsort(scores)[::-1]: of two equally confident circles, the second one listed
    # is the "most confident", so a one-circle colour clause reads its colour, not the first one's.
    red = Detection("circle", (0, 0, 10, 10), 0.8, "red")
    blue = Detection("circle", (20, 0, 30, 10), 0.8, "blue")
    record = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "blue"}]}
    assert judge(record, [red, blue]).correct
    assert not judge(record, [blue, red]).correct
    assert group_detections([red, blue], "colors")["circle"] == [blue, red]
    # a higher score still wins whatever the order
    assert group_detections([Detection("circle", (0, 0, 1, 1), 0.9, "red"), blue], "colors")["circle"][0].color == "red"
