"""The shipped prompt splits: reproducible byte for byte, disjoint where promised, and solvable."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import replace

import pytest

from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.rules import judge_image, validate_metadata
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import solve_layout
from thinkdraw.world.prompts import all_prompts, mention_order
from thinkdraw.world.render import WorldObject, boxes_apart, render_image
from thinkdraw.world.spec import CANVAS, SHAPES, noun
from thinkdraw.world.splits import build_splits, load_split, read_jsonl, shipped_dir, write_splits

SAMPLED = ("position", "color_attr", "complex", "indirect")
CLOSED = ("single_object", "two_object", "counting", "colors")
DETECTOR = WorldDetector()


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[dict]]:
    return {name: load_split(name) for name in ("train", "val", "test")}


def test_rebuild_is_byte_identical(tmp_path):
    manifest = write_splits(tmp_path)
    for name in ("train", "val", "test"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (shipped_dir() / f"{name}.jsonl").read_bytes(), name
    assert (tmp_path / "manifest.json").read_bytes() == (shipped_dir() / "manifest.json").read_bytes()
    assert manifest == json.loads((shipped_dir() / "manifest.json").read_text())
    # build_splits itself (not just write_splits) gives the same records.
    assert build_splits() == {name: load_split(name) for name in ("test", "val", "train")}


def test_manifest_matches_files(shipped):
    manifest = json.loads((shipped_dir() / "manifest.json").read_text())
    assert manifest["version"] == "world-v1"
    for name, records in shipped.items():
        info = manifest["splits"][name]
        data = (shipped_dir() / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert info["prompts"] == len(records) == data.count(b"\n")
        assert info["per_task"] == dict(Counter(r["tag"] for r in records))
    assert [len(shipped[n]) for n in ("train", "val", "test")] == [10_000, 294, 474]
    assert {t: manifest["splits"]["test"]["per_task"][t] for t in SAMPLED} == {
        "position": 60,
        "color_attr": 60,
        "complex": 120,
        "indirect": 120,
    }


def test_every_record_is_valid(shipped):
    for records in shipped.values():
        for r in records:
            validate_metadata(r, SHAPES)


def test_evaluation_splits_hold_every_closed_prompt(shipped):
    for name in ("val", "test"):
        for task in CLOSED:
            assert [r for r in shipped[name] if r["tag"] == task] == all_prompts(task), (name, task)


def test_held_out_prompts_never_in_train(shipped):
    train = {r["prompt"] for r in shipped["train"]}
    for name in ("val", "test"):
        held = {r["prompt"] for r in shipped[name] if r["tag"] in ("complex", "indirect")}
        assert len(held) == {"val": 120, "test": 240}[name]
        assert held.isdisjoint(train), name


def test_val_and_test_share_no_sampled_prompt(shipped):
    val = [r["prompt"] for r in shipped["val"] if r["tag"] in SAMPLED]
    test = [r["prompt"] for r in shipped["test"] if r["tag"] in SAMPLED]
    assert len(set(val)) == len(val) == 180
    assert len(set(test)) == len(test) == 360
    assert set(val).isdisjoint(test)


def test_load_split_errors(tmp_path):
    with pytest.raises(MetadataError, match="unknown split 'dev'"):
        load_split("dev")
    with pytest.raises(MetadataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(load_split("val")[0]) + "\n\n{not json\n")
    with pytest.raises(MetadataError, match=r"bad.jsonl:3: not valid JSON"):
        read_jsonl(bad)
    bad.write_text('{"tag": "x", "prompt": "y", "include": []}\n')
    with pytest.raises(MetadataError, match=r"bad.jsonl:1: metadata needs a non-empty list 'include'"):
        read_jsonl(bad)


# --- ground truth: the evaluator gives 1.0 on the scenes the prompts are drawn from ---------


def test_every_test_prompt_has_a_ground_truth_scene_judged_correct(shipped):
    wrong = []
    for index, record in enumerate(shipped["test"]):
        objects = solve_layout(record, random.Random(index))
        verdict = judge_image(record, render_image(objects), DETECTOR)
        if not verdict.correct:
            wrong.append((record["prompt"], verdict.reason))
    assert wrong == []


def test_ground_truth_objects_follow_the_prompt(shipped):
    """Clauses in the order the prompt names them (a relation's subject before its target, though
    GenEval lists the target first); a clause's objects top to bottom, then left to right."""
    record = first(shipped["test"], "complex", lambda r: len(r["include"]) == 3 and "position" in r["include"][1])
    subject, target, third = (record["include"][i] for i in (1, 0, 2))
    assert record["prompt"].index(noun(subject["class"], subject["count"])) < record["prompt"].index(
        noun(target["class"], target["count"])
    )
    objects = solve_layout(record, random.Random(4))
    counts = [subject["count"], target["count"], third["count"]]
    expected = [c["class"] for c, n in zip((subject, target, third), counts, strict=True) for _ in range(n)]
    assert [o.shape for o in objects] == expected
    for clause_objects in (objects[: counts[0]], objects[counts[0] : counts[0] + counts[1]], objects[-counts[2] :]):
        corners = [(o.y0, o.x0) for o in clause_objects]
        assert corners == sorted(corners)
    assert mention_order(record["include"]) == [1, 0, 2]
    assert mention_order([{"class": "star"}, {"class": "circle"}]) == [0, 1]


def first(records: list[dict], tag: str, predicate=lambda r: True) -> dict:
    return next(r for r in records if r["tag"] == tag and predicate(r))


def judged(record: dict, objects: list[WorldObject]):
    return judge_image(record, render_image(objects), DETECTOR)


def free_spot(objects: list[WorldObject], shape: str, color: str) -> WorldObject:
    for y in range(0, CANVAS - 11):
        for x in range(0, CANVAS - 11):
            candidate = WorldObject(shape, color, x, y, 12)
            if all(boxes_apart(candidate.box, o.box) for o in objects):
                return candidate
    raise AssertionError("no room")


@pytest.mark.parametrize("tag", ["single_object", "two_object", "counting", "colors", "position", "complex"])
def test_dropping_an_object_fails_its_count(shipped, tag):
    record = first(shipped["test"], tag, lambda r: True)
    objects = solve_layout(record, random.Random(0))
    assert judged(record, objects).correct
    clause = record["include"][0]
    victim = next(o for o in objects if o.shape == clause["class"])
    verdict = judged(record, [o for o in objects if o is not victim])
    assert not verdict.correct
    assert verdict.failures[0].kind == "count"
    assert verdict.failures[0].clause == 0
    assert verdict.failures[0].message == f"expected {clause['class']}>={clause['count']}, found {clause['count'] - 1}"
    if any("position" in c for c in record["include"]):
        assert [f.kind for f in verdict.failures] == ["count", "position"]  # the subject has no target


@pytest.mark.parametrize("tag", ["colors", "color_attr", "complex", "indirect"])
def test_swapping_a_colour_fails_with_a_colour_failure(shipped, tag):
    record = first(shipped["test"], tag, lambda r: "color" in r["include"][0])
    objects = solve_layout(record, random.Random(1))
    assert judged(record, objects).correct
    clause = record["include"][0]
    other = "blue" if clause["color"] != "blue" else "red"
    victim = next(o for o in objects if o.shape == clause["class"])
    verdict = judged(record, [replace(o, color=other) if o is victim else o for o in objects])
    assert not verdict.correct
    assert [(f.kind, f.clause) for f in verdict.failures][0] == ("color", 0)
    assert verdict.failures[0].message.startswith(f"expected {clause['color']} {clause['class']}>={clause['count']}")


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_mirrored_scene_fails_its_relation(shipped, relation):
    record = first(shipped["test"], "position", lambda r: r["include"][1]["position"][0] == relation)
    objects = solve_layout(record, random.Random(2))
    assert judged(record, objects).correct
    if relation in ("left of", "right of"):
        mirrored = [replace(o, x0=CANVAS - o.x0 - o.size) for o in objects]
    else:
        mirrored = [replace(o, y0=CANVAS - o.y0 - o.size) for o in objects]
    verdict = judged(record, mirrored)
    assert [(f.kind, f.clause) for f in verdict.failures] == [("position", 1)]
    assert verdict.failures[0].message.startswith(f"expected {record['include'][1]['class']} {relation} target")


def test_one_too_many_fails_the_exclude_clause(shipped):
    record = first(shipped["test"], "counting", lambda r: r["include"][0]["count"] == 3)
    objects = solve_layout(record, random.Random(3))
    assert judged(record, objects).correct
    shape = record["include"][0]["class"]
    verdict = judged(record, objects + [free_spot(objects, shape, "black")])
    assert [(f.kind, f.clause, f.message) for f in verdict.failures] == [("exclude", 0, f"expected {shape}<4, found 4")]
