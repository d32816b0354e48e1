"""What the shapes world offers by name: its shipped models and its detector (the CLI lists these)."""

from __future__ import annotations

from pathlib import Path

from thinkdraw.world.detector import WorldDetector

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED_MODELS = {"base": ASSETS / "base", "sft": ASSETS / "sft", "grpo": ASSETS / "grpo"}
SHIPPED_JUDGES = {"world": ASSETS / "judge"}  # the world judge (a tiny LLaVA): --judge world
ENVIRONMENT = "world"  # what world checkpoints record as their environment (thinkdraw.json)

DETECTORS = {"world": WorldDetector}
