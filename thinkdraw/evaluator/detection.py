"""What every detector returns, and the protocol the GenEval rule engine runs on.

The rule engine never looks at pixels itself: a detector finds objects (class, box, score)
and names the colour of the ones a colour clause asks about. The shapes world's exact
detector and the transformers port of GenEval's Mask2Former + CLIP both fit here; a
segmenting detector keeps each object's mask on its detection, for its own colours().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Detection:
    label: str  # the class name, as in GenEval metadata ("circle", "dog")
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels, origin top-left
    score: float  # detector confidence in [0, 1]
    color: str | None = None  # filled in by detectors that know it without a classifier
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # [H, W] bool, image-sized


class Detector(Protocol):
    """Finds objects; names colours when a colour clause asks."""

    classes: tuple[str, ...]

    def detect(self, image: Image.Image) -> list[Detection]: ...

    def colors(self, image: Image.Image, detections: list[Detection]) -> list[str]: ...
