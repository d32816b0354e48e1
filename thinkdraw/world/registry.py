"""What the shapes world offers by name: its shipped models and its detector (the CLI lists these)."""

from __future__ import annotations

from pathlib import Path

from thinkdraw.errors import ThinkdrawError
from thinkdraw.world.detector import WorldDetector

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED_MODELS = {"base": ASSETS / "base", "sft": ASSETS / "sft", "grpo": ASSETS / "grpo"}


def rule_judge(device: str = "cpu"):
    """GenEval's rules over the shipped learned detector (--judge world-rules): a world judge that reads images
    as the exact detector does without calling it. It knows the records of the world's splits and every prompt
    the templates can say (indirect ones only from the splits)."""
    from thinkdraw.judges.rules import RuleJudge
    from thinkdraw.world.data import feedback_sentence
    from thinkdraw.world.learned_detector import LearnedWorldDetector
    from thinkdraw.world.prompts import record_of
    from thinkdraw.world.splits import SPLIT_NAMES, load_split

    records = {r["prompt"]: r for name in SPLIT_NAMES for r in load_split(name)}
    detector = LearnedWorldDetector.load(ASSETS / "detector", device)
    return RuleJudge(detector, lambda prompt: records.get(prompt) or record_of(prompt), feedback_sentence)


# --judge world: the tiny LLaVA judge; world-rules: GenEval's rules over the learned detector
SHIPPED_JUDGES = {"world": ASSETS / "judge", "world-rules": rule_judge}


def chat_judge(spec: str) -> str:
    """Where a chat judge named `spec` is (a shipped name, a folder, a hub id or a url), for the commands that
    ask a judge free questions (DPG-Bench, serve-judge); the rule judge answers only the Judge protocol's."""
    found = SHIPPED_JUDGES.get(spec, spec)
    if callable(found):
        raise ThinkdrawError(f"--judge {spec} answers by GenEval's rules, not by chat: give a chat judge here")
    return str(found)


ENVIRONMENT = "world"  # what world checkpoints record as their environment (thinkdraw.json)

DETECTORS = {"world": WorldDetector}
