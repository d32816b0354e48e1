"""The shapes world's fixed vocabulary and geometry (DESIGN.md, "The shapes world").

Everything here is part of the exact spec that the renderer, the detector, the prompt
generator and the evaluator agree on. Change it and the shipped splits and checkpoints
no longer match.
"""

from __future__ import annotations

CANVAS = 64
BACKGROUND = (128, 128, 128)
MIN_SIZE, MAX_SIZE = 12, 24
MIN_GAP = 2  # boxes are at least this many pixels apart (Chebyshev distance between boxes)

# GenEval's ten colours, in GenEval's order.
COLORS: dict[str, tuple[int, int, int]] = {
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

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "star": "stars",
}

NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

# The reasoning plan writes boxes on GoT's 0-1000 grid.
PLAN_GRID = 1000


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (a circle, an orange star)."""
    return "an" if word[0] in "aeiou" else "a"


def noun(shape: str, count: int) -> str:
    return shape if count == 1 else PLURALS[shape]
