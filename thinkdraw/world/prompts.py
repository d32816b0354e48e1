"""Prompts over the world vocabulary, each with its exact GenEval metadata.

Eight tasks. Six are GenEval's templates word for word (single_object, two_object, counting,
colors, position, color_attr). Two are harder:
- complex: two or three object phrases mixing counts up to five, colours and a relation;
- indirect: one attribute named by a fact to resolve first: a colour by a thing
  ("the colour of grass"), a shape by a property ("a shape with three corners"),
  a count by a little arithmetic ("as many stars as a triangle has corners").
Every generator takes a random.Random and returns a metadata dict (tag, include,
exclude, prompt), so a seed fixes the prompt and its spec together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from thinkdraw.world.spec import COLORS, NUMBERS, RELATIONS, SHAPES, article, noun

TASKS = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
    "complex",
    "indirect",
)
GENEVAL_TASKS = TASKS[:6]

# Facts for the indirect task. Each names exactly one of the world's colours, shapes or counts.
COLOR_OF_THING = {
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
SHAPE_BY_PROPERTY = {  # shape -> (singular phrase, plural phrase)
    "triangle": ("shape with three corners", "shapes with three corners"),
    "circle": ("shape with no corners", "shapes with no corners"),
    "square": ("shape with four right angles", "shapes with four right angles"),
    "diamond": ("square standing on one corner", "squares standing on one corner"),
    "cross": ("shape like a plus sign", "shapes like plus signs"),
    "star": ("shape with five points", "shapes with five points"),
}
# count -> ways to say it as a fact or a sum; "{n}" is the plural noun phrase.
COUNT_BY_FACT = {
    2: ["a pair of {n}", "one plus one {n}"],
    3: ["as many {n} as a triangle has corners", "two plus one {n}"],
    4: ["as many {n} as a square has corners", "two plus two {n}", "three plus one {n}"],
    5: ["as many {n} as a star has points", "three plus two {n}", "four plus one {n}"],
}


@dataclass(frozen=True)
class Phrase:
    """One object phrase: `count` objects of `shape`, optionally all of `color`."""

    shape: str
    count: int = 1
    color: str | None = None

    def text(self) -> str:
        words = f"{self.color} {noun(self.shape, self.count)}" if self.color else noun(self.shape, self.count)
        return f"{article(words)} {words}" if self.count == 1 else f"{NUMBERS[self.count]} {words}"

    def clause(self) -> dict:
        clause = {"class": self.shape, "count": self.count}
        if self.color:
            clause["color"] = self.color
        return clause


def _metadata(tag: str, prompt: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    record = {"tag": tag, "include": include}
    if exclude:
        record["exclude"] = exclude
    record["prompt"] = prompt
    return record


def _colors(rng: random.Random, k: int) -> list[str]:
    return rng.sample(list(COLORS), k)


def single_object(rng: random.Random) -> dict:
    p = Phrase(rng.choice(SHAPES))
    return _metadata("single_object", f"a photo of {p.text()}", [p.clause()])


def two_object(rng: random.Random) -> dict:
    a, b = (Phrase(s) for s in rng.sample(SHAPES, 2))
    return _metadata("two_object", f"a photo of {a.text()} and {b.text()}", [a.clause(), b.clause()])


def counting(rng: random.Random) -> dict:
    p = Phrase(rng.choice(SHAPES), rng.choice([2, 3, 4]))
    exclude = [{"class": p.shape, "count": p.count + 1}]
    return _metadata("counting", f"a photo of {p.text()}", [p.clause()], exclude)


def colors(rng: random.Random) -> dict:
    p = Phrase(rng.choice(SHAPES), 1, rng.choice(list(COLORS)))
    return _metadata("colors", f"a photo of {p.text()}", [p.clause()])


def position(rng: random.Random) -> dict:
    subject, target = (Phrase(s) for s in rng.sample(SHAPES, 2))
    relation = rng.choice(RELATIONS)
    include = [target.clause(), {**subject.clause(), "position": [relation, 0]}]
    return _metadata("position", f"a photo of {subject.text()} {relation} {target.text()}", include)


def color_attr(rng: random.Random) -> dict:
    (sa, sb), (ca, cb) = rng.sample(SHAPES, 2), _colors(rng, 2)
    a, b = Phrase(sa, 1, ca), Phrase(sb, 1, cb)
    return _metadata("color_attr", f"a photo of {a.text()} and {b.text()}", [a.clause(), b.clause()])


def mention_order(include: list[dict]) -> list[int]:
    """Indices of the include clauses in the order the prompt names them: GenEval lists a relation's
    target before its subject, the prompt says the subject first ("a star below four circles")."""
    order: list[int] = []
    for i, clause in enumerate(include):
        if "position" not in clause:
            order += [j for j, c in enumerate(include) if c.get("position", (None, None))[1] == i] + [i]
    return order + [i for i in range(len(include)) if i not in order]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _exclusions(phrases: list[Phrase]) -> list[dict]:
    """Counted phrases are exact, as in GenEval's counting task: one more is wrong."""
    return [{"class": p.shape, "count": p.count + 1} for p in phrases if p.count > 1]


def _compose(tag: str, phrases: list[Phrase], texts: list[str], relation: str | None) -> dict:
    """Prompt and metadata for phrases; with a relation, phrase 0 stands `relation` phrase 1.

    GenEval lists a relation's target before its subject, so the clauses are reordered.
    """
    if relation is None:
        include = [p.clause() for p in phrases]
        body = _join(texts)
    else:
        include = [phrases[1].clause(), {**phrases[0].clause(), "position": [relation, 0]}]
        include += [p.clause() for p in phrases[2:]]
        body = _join([f"{texts[0]} {relation} {texts[1]}"] + texts[2:])
    return _metadata(tag, f"a photo of {body}", include, _exclusions(phrases))


MAX_COMPLEX_OBJECTS = 8


def complex_(rng: random.Random) -> dict:
    """Two or three phrases of distinct shapes; counts up to five, colours, at most one relation."""
    while True:
        shapes = rng.sample(SHAPES, rng.choice([2, 2, 3]))
        phrases = [
            Phrase(s, rng.choice([1, 1, 2, 3, 4, 5]), rng.choice(list(COLORS)) if rng.random() < 0.6 else None)
            for s in shapes
        ]
        relation = rng.choice(RELATIONS) if rng.random() < 0.6 else None
        limit = MAX_COMPLEX_OBJECTS - (2 if relation else 0)  # relations confine objects to half the canvas
        if sum(p.count for p in phrases) <= limit:
            return _compose("complex", phrases, [p.text() for p in phrases], relation)


def _indirect_text(p: Phrase, kind: str, rng: random.Random) -> str:
    """The phrase with one attribute (`kind`: color, shape or count) named by a fact."""
    if kind == "shape":
        words = SHAPE_BY_PROPERTY[p.shape][p.count > 1]
        words = f"{p.color} {words}" if p.color else words
        return f"{article(words)} {words}" if p.count == 1 else f"{NUMBERS[p.count]} {words}"
    if kind == "color":
        thing = rng.choice([t for t, c in COLOR_OF_THING.items() if c == p.color])
        return f"{Phrase(p.shape, p.count).text()} the colour of {thing}"
    plural = f"{p.color} {noun(p.shape, 2)}" if p.color else noun(p.shape, 2)
    return rng.choice(COUNT_BY_FACT[p.count]).format(n=plural)


def indirect(rng: random.Random) -> dict:
    """One or two phrases; the first names one attribute by a fact; maybe a relation between them."""
    kind = rng.choice(["color", "shape", "count"])
    shapes = rng.sample(SHAPES, rng.choice([1, 2]))
    first = Phrase(
        shapes[0],
        rng.choice([2, 3, 4, 5]) if kind == "count" else 1,
        rng.choice(list(COLORS)) if kind == "color" or rng.random() < 0.3 else None,
    )
    phrases = [first] + [Phrase(s, 1, rng.choice(list(COLORS)) if rng.random() < 0.5 else None) for s in shapes[1:]]
    texts = [_indirect_text(first, kind, rng)] + [p.text() for p in phrases[1:]]
    relation = rng.choice(RELATIONS) if len(phrases) == 2 and rng.random() < 0.5 else None
    return _compose("indirect", phrases, texts, relation)


GENERATORS = {
    "single_object": single_object,
    "two_object": two_object,
    "counting": counting,
    "colors": colors,
    "position": position,
    "color_attr": color_attr,
    "complex": complex_,
    "indirect": indirect,
}


_NUMBER_WORDS = {word: n for n, word in NUMBERS.items()}
_NOUNS = {noun(shape, count): (shape, count > 1) for shape in SHAPES for count in (1, 2)}
_TEMPLATE_TASKS = (  # (phrases, counted, coloured, relation) -> the GenEval template that says exactly that
    ("single_object", lambda ps, rel: len(ps) == 1 and ps[0].count == 1 and not ps[0].color),
    ("counting", lambda ps, rel: len(ps) == 1 and 2 <= ps[0].count <= 4 and not ps[0].color),
    ("colors", lambda ps, rel: len(ps) == 1 and ps[0].count == 1 and ps[0].color),
    ("two_object", lambda ps, rel: len(ps) == 2 and not rel and all(p.count == 1 and not p.color for p in ps)),
    ("position", lambda ps, rel: len(ps) == 2 and rel and all(p.count == 1 and not p.color for p in ps)),
    ("color_attr", lambda ps, rel: len(ps) == 2 and not rel and all(p.count == 1 and p.color for p in ps)),
)


def _phrase(text: str) -> Phrase | None:
    words = text.split()
    if len(words) not in (2, 3) or words[-1] not in _NOUNS:
        return None
    shape, plural = _NOUNS[words[-1]]
    count = 1 if words[0] in ("a", "an") else _NUMBER_WORDS.get(words[0])
    color = words[1] if len(words) == 3 else None
    if count is None or (count > 1) != plural or (color is not None and color not in COLORS):
        return None
    return Phrase(shape, count, color)


def record_of(prompt: str) -> dict | None:
    """The GenEval record of a prompt the world's templates can say (every task but indirect, whose facts are not
    parsed), or None: the prompt is read into phrases and a relation, said again by the generators' own
    composition, and kept only when that gives back the same text."""
    if not prompt.startswith("a photo of "):
        return None
    parts = prompt.removeprefix("a photo of ").replace(" and ", ", ").split(", ")
    relation, texts = None, parts
    for rel in RELATIONS:
        subject, found, target = parts[0].partition(f" {rel} ")
        if found:
            relation, texts = rel, [subject, target, *parts[1:]]
            break
    phrases = [_phrase(t) for t in texts]
    if None in phrases or len({p.shape for p in phrases}) < len(phrases):
        return None
    tag = next((task for task, fits in _TEMPLATE_TASKS if fits(phrases, relation)), "complex")
    record = _compose(tag, phrases, [p.text() for p in phrases], relation)
    return record if record["prompt"] == prompt else None


def generate(task: str, rng: random.Random) -> dict:
    return GENERATORS[task](rng)


def all_prompts(task: str) -> list[dict] | None:
    """Every distinct prompt of a small GenEval task, in a fixed order; None for the open-ended ones."""
    if task == "single_object":
        return [_metadata(task, f"a photo of {Phrase(s).text()}", [Phrase(s).clause()]) for s in SHAPES]
    if task == "two_object":
        pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
        return [
            _metadata(
                task, f"a photo of {Phrase(a).text()} and {Phrase(b).text()}", [Phrase(a).clause(), Phrase(b).clause()]
            )
            for a, b in pairs
        ]
    if task == "counting":
        return [
            _metadata(
                task, f"a photo of {Phrase(s, n).text()}", [Phrase(s, n).clause()], [{"class": s, "count": n + 1}]
            )
            for s in SHAPES
            for n in (2, 3, 4)
        ]
    if task == "colors":
        return [
            _metadata(task, f"a photo of {Phrase(s, 1, c).text()}", [Phrase(s, 1, c).clause()])
            for s in SHAPES
            for c in COLORS
        ]
    return None
