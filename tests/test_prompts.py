"""Prompt generators: GenEval's templates word for word, and metadata that says what the words say."""

from __future__ import annotations

import json
import random
import re

import pytest

from thinkdraw.evaluator.rules import validate_metadata
from thinkdraw.world.prompts import (
    COLOR_OF_THING,
    COUNT_BY_FACT,
    SHAPE_BY_PROPERTY,
    TASKS,
    Phrase,
    all_prompts,
    generate,
)
from thinkdraw.world.spec import COLORS, PLURALS, SHAPES

# One record per task from GenEval's own evaluation_metadata.jsonl: the schema and key order to match.
OFFICIAL = [
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    '{"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}], '
    '"prompt": "a photo of a bench and a sports ball"}',
    '{"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], '
    '"prompt": "a photo of two clocks"}',
    '{"tag": "colors", "include": [{"class": "fire hydrant", "count": 1, "color": "blue"}], '
    '"prompt": "a photo of a blue fire hydrant"}',
    '{"tag": "position", "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, '
    '"position": ["right of", 0]}], "prompt": "a photo of a dog right of a teddy bear"}',
    '{"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"}, '
    '{"class": "apple", "count": 1, "color": "black"}], "prompt": "a photo of a purple wine glass and a black apple"}',
]


def find(task: str, prompt: str, draws: int = 50_000) -> dict:
    """The first record of `task` whose prompt is `prompt`, from one seeded stream."""
    rng = random.Random(0)
    for _ in range(draws):
        record = generate(task, rng)
        if record["prompt"] == prompt:
            return record
    raise AssertionError(f"{task} never produced {prompt!r}")


def same_schema(ours: dict, official: dict) -> None:
    assert list(ours) == list(official)
    for a, b in zip(ours["include"], official["include"], strict=True):
        assert list(a) == list(b)


def test_official_records_validate():
    for line in OFFICIAL:
        record = json.loads(line)
        assert validate_metadata(record) is record


def test_single_object_template():
    record = find("single_object", "a photo of a circle")
    assert record == {
        "tag": "single_object",
        "include": [{"class": "circle", "count": 1}],
        "prompt": "a photo of a circle",
    }
    same_schema(record, json.loads(OFFICIAL[0]))


def test_two_object_template():
    record = find("two_object", "a photo of a circle and a star")
    assert record == {
        "tag": "two_object",
        "include": [{"class": "circle", "count": 1}, {"class": "star", "count": 1}],
        "prompt": "a photo of a circle and a star",
    }
    same_schema(record, json.loads(OFFICIAL[1]))


def test_counting_template():
    record = find("counting", "a photo of three squares")
    assert record == {
        "tag": "counting",
        "include": [{"class": "square", "count": 3}],
        "exclude": [{"class": "square", "count": 4}],
        "prompt": "a photo of three squares",
    }
    same_schema(record, json.loads(OFFICIAL[2]))
    assert find("counting", "a photo of two crosses")["include"] == [{"class": "cross", "count": 2}]


def test_colors_template():
    record = find("colors", "a photo of a red diamond")
    assert record == {
        "tag": "colors",
        "include": [{"class": "diamond", "count": 1, "color": "red"}],
        "prompt": "a photo of a red diamond",
    }
    same_schema(record, json.loads(OFFICIAL[3]))
    assert find("colors", "a photo of an orange star")["include"] == [{"class": "star", "count": 1, "color": "orange"}]


def test_position_template():
    record = find("position", "a photo of a cross left of a circle")
    # GenEval lists the target first; the subject points back at it.
    assert record == {
        "tag": "position",
        "include": [{"class": "circle", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a cross left of a circle",
    }
    same_schema(record, json.loads(OFFICIAL[4]))


def test_color_attr_template():
    record = find("color_attr", "a photo of a red circle and a blue star")
    assert record == {
        "tag": "color_attr",
        "include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "star", "count": 1, "color": "blue"}],
        "prompt": "a photo of a red circle and a blue star",
    }
    same_schema(record, json.loads(OFFICIAL[5]))


def test_phrase_text_articles_numbers_plurals():
    assert Phrase("star", 1, "orange").text() == "an orange star"
    assert Phrase("star", 1, "red").text() == "a red star"
    assert Phrase("cross", 2).text() == "two crosses"
    assert Phrase("circle", 5, "white").text() == "five white circles"
    assert Phrase("diamond", 1).clause() == {"class": "diamond", "count": 1}
    assert Phrase("diamond", 3, "pink").clause() == {"class": "diamond", "count": 3, "color": "pink"}


def test_closed_tasks_are_complete():
    assert len(all_prompts("single_object")) == 6
    assert len(all_prompts("two_object")) == 30
    assert len(all_prompts("counting")) == 18
    assert len(all_prompts("colors")) == 60
    assert all_prompts("position") is None and all_prompts("complex") is None
    colors = {r["prompt"] for r in all_prompts("colors")}
    assert "a photo of an orange star" in colors and "a photo of a orange star" not in colors
    assert sum(p.startswith("a photo of an ") for p in colors) == 6  # orange is the one vowel colour
    counting = {r["prompt"]: r for r in all_prompts("counting")}
    assert counting["a photo of four triangles"]["exclude"] == [{"class": "triangle", "count": 5}]
    # The generators draw only from the closed sets.
    for task in ("single_object", "two_object", "counting", "colors"):
        closed = [json.dumps(r) for r in all_prompts(task)]
        rng = random.Random(1)
        assert all(json.dumps(generate(task, rng)) in closed for _ in range(200)), task


@pytest.mark.parametrize("task", TASKS)
def test_generation_is_seeded(task):
    def draw(seed):
        rng = random.Random(seed)
        return [generate(task, rng) for _ in range(20)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


@pytest.mark.parametrize("task", TASKS)
def test_every_record_is_valid_and_well_formed(task):
    rng = random.Random(123)
    for _ in range(500):
        record = generate(task, rng)
        assert validate_metadata(record, SHAPES) is record
        assert record["tag"] == task
        assert record["prompt"].startswith("a photo of ")
        assert "  " not in record["prompt"] and not record["prompt"].endswith(" ")
        classes = [c["class"] for c in record["include"]]
        assert len(classes) == len(set(classes))  # one clause per shape: counts stay exact
        for c in record["include"]:
            assert 1 <= c["count"] <= 5
        # A counted phrase is exact: its exclude clause is count + 1, and only those have one.
        expected = [{"class": c["class"], "count": c["count"] + 1} for c in record["include"] if c["count"] > 1]
        assert sorted(record.get("exclude", []), key=str) == sorted(expected, key=str)


def test_complex_prompts_stay_within_bounds():
    rng = random.Random(9)
    relations = 0
    for _ in range(2000):
        record = generate("complex", rng)
        include = record["include"]
        assert 2 <= len(include) <= 3
        assert sum(c["count"] for c in include) <= 8
        assert all(c["count"] <= 5 for c in include)
        positioned = [c for c in include if "position" in c]
        assert len(positioned) <= 1
        if positioned:
            relations += 1
            assert include[1] is positioned[0] and include[1]["position"][1] == 0
            assert sum(c["count"] for c in include) <= 6
    assert 0.4 < relations / 2000 < 0.8


def parse_phrase(text: str) -> tuple[int, str | None, str]:
    """(count, colour, shape) from a plain phrase like 'two red circles' or 'an orange star'."""
    words = text.split()
    numbers = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
    count = numbers[words[0]]
    color = words[1] if len(words) == 3 else None
    noun = words[-1]
    shape = next(s for s in SHAPES if noun in (s, PLURALS[s]))
    return count, color, shape


# Facts, restated here by hand: the generator's tables must agree with the world.
FACT_COLORS = {
    "grass": "green",
    "a frog": "green",
    "a ripe tomato": "red",
    "a strawberry": "red",
    "a carrot": "orange",
    "a pumpkin": "orange",
    "a lemon": "yellow",
    "a banana": "yellow",
    "the clear sky": "blue",
    "a blueberry": "blue",
    "a plum": "purple",
    "lavender": "purple",
    "a flamingo": "pink",
    "bubblegum": "pink",
    "chocolate": "brown",
    "a tree trunk": "brown",
    "coal": "black",
    "a crow": "black",
    "fresh snow": "white",
    "milk": "white",
}
FACT_SHAPES = {
    "three corners": "triangle",
    "no corners": "circle",
    "four right angles": "square",
    "standing on one corner": "diamond",
    "plus sign": "cross",  # also inside "plus signs"
    "five points": "star",
}
CORNERS = {"triangle": 3, "square": 4, "star": 5}
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4}


def test_fact_tables():
    assert COLOR_OF_THING == FACT_COLORS
    for shape, (singular, plural) in SHAPE_BY_PROPERTY.items():
        assert [FACT_SHAPES[k] for k in FACT_SHAPES if k in singular] == [shape]
        assert [FACT_SHAPES[k] for k in FACT_SHAPES if k in plural] == [shape]
    for count, ways in COUNT_BY_FACT.items():
        for way in ways:
            sentence = way.format(n="stars")
            if m := re.fullmatch(r"as many stars as a (\w+) has (?:corners|points)", sentence):
                assert CORNERS[m[1]] == count
            elif m := re.fullmatch(r"(\w+) plus (\w+) stars", sentence):
                assert WORDS[m[1]] + WORDS[m[2]] == count
            else:
                assert sentence == "a pair of stars" and count == 2


def resolve(text: str) -> tuple[int, str | None, str]:
    """Independently resolve an indirect phrase to (count, colour, shape)."""
    if m := re.fullmatch(r"(.+) the colour of (.+)", text):
        count, _, shape = parse_phrase(m[1])
        return count, FACT_COLORS[m[2]], shape
    if m := re.fullmatch(r"as many (?:(\w+) )?(\w+) as an? (\w+) has (?:corners|points)", text):
        return CORNERS[m[3]], m[1], parse_phrase("two " + m[2])[2]
    if m := re.fullmatch(r"(\w+) plus (\w+) (?:(\w+) )?(\w+)", text):
        return WORDS[m[1]] + WORDS[m[2]], m[3], parse_phrase("two " + m[4])[2]
    if m := re.fullmatch(r"a pair of (?:(\w+) )?(\w+)", text):
        return 2, m[1], parse_phrase("two " + m[2])[2]
    for key, shape in FACT_SHAPES.items():
        if key in text:
            words = text.split()
            count = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}[words[0]]
            color = words[1] if words[1] in COLORS else None
            return count, color, shape
    raise AssertionError(f"cannot resolve {text!r}")


def test_indirect_facts_resolve_exactly():
    rng = random.Random(77)
    kinds = set()
    for _ in range(1000):
        record = generate("indirect", rng)
        body = record["prompt"].removeprefix("a photo of ")
        relation = next((r for r in ("left of", "right of", "above", "below") if f" {r} " in body), None)
        if relation:
            first, rest = body.split(f" {relation} ")
            second = rest
            by_shape = {c["class"]: c for c in record["include"]}
            assert len(record["include"]) == 2
            assert record["include"][1]["position"] == [relation, 0]
            parts = [first, second]
        else:
            parts = body.split(" and ")
            by_shape = {c["class"]: c for c in record["include"]}
            assert len(parts) == len(record["include"])
        first_count, first_color, first_shape = resolve(parts[0])
        kinds.add("colour" if "the colour of" in parts[0] else "fact")
        clause = by_shape[first_shape]
        assert clause["count"] == first_count
        assert clause.get("color") == first_color
        for part in parts[1:]:
            count, color, shape = parse_phrase(part)
            assert (by_shape[shape]["count"], by_shape[shape].get("color")) == (count, color)
    assert kinds == {"colour", "fact"}


def test_indirect_pinned_examples():
    grass = find("indirect", "a photo of a square the colour of grass")
    assert grass["include"] == [{"class": "square", "count": 1, "color": "green"}]
    assert "exclude" not in grass
    corners = find("indirect", "a photo of as many stars as a square has corners")
    assert corners["include"] == [{"class": "star", "count": 4}]
    assert corners["exclude"] == [{"class": "star", "count": 5}]
    shape = find("indirect", "a photo of an orange shape with three corners")
    assert shape["include"] == [{"class": "triangle", "count": 1, "color": "orange"}]


def test_complex_prompts_say_what_their_metadata_says():
    rng = random.Random(31)
    for _ in range(1000):
        record = generate("complex", rng)
        body = record["prompt"].removeprefix("a photo of ")
        head, _, last = body.rpartition(" and ")
        texts = head.split(", ") + [last] if head else [body]
        relation = next((r for r in ("left of", "right of", "above", "below") if f" {r} " in texts[0]), None)
        if relation:
            subject, target = texts[0].split(f" {relation} ")
            texts = [subject, target] + texts[1:]
        phrases = [parse_phrase(t) for t in texts]
        include = [{"class": s, "count": n, **({"color": c} if c else {})} for n, c, s in phrases]
        if relation:
            include = [include[1], {**include[0], "position": [relation, 0]}] + include[2:]
        assert record["include"] == include, record["prompt"]


def test_task_lists_agree():
    from thinkdraw.evaluator.geneval import GENEVAL_TASKS as SCORED
    from thinkdraw.world.prompts import GENEVAL_TASKS

    six = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    assert GENEVAL_TASKS == SCORED == six
    assert TASKS == six + ("complex", "indirect")


def test_record_of_reads_back_every_template_prompt():
    from thinkdraw.world.prompts import record_of
    from thinkdraw.world.splits import load_split

    rng = random.Random(5)
    for task in TASKS[:-1]:  # indirect prompts name attributes by facts: not read
        for _ in range(40):
            record = generate(task, rng)
            got = record_of(record["prompt"])
            assert got["include"] == record["include"] and got.get("exclude") == record.get("exclude"), record
            assert got["tag"] == record["tag"] or task == "complex", (record, got)  # complex may say a template
    assert record_of(load_split("val")[0]["prompt"].replace("a photo of", "a picture of")) is None
    for prompt in ("a photo of a star above a star", "a photo of two star", "a photo of an red star", "a photo of"):
        assert record_of(prompt) is None, prompt
