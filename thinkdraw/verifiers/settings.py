"""Verifier settings: every knob of test-time verification, defined once (the CLI builds its options from these
fields). Imports nothing heavy, so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from thinkdraw.errors import ThinkdrawError

VERIFIERS = ("bon", "prm", "parm", "parm++")


@dataclass(frozen=True)
class VerifierSettings:
    candidates: int = field(default=20, metadata={"help": "with --verifier: candidates drawn per image", "short": "-N"})
    checks: int = field(default=8, metadata={"help": "prm, parm: partial-image checks, spread over the image"})
    keep: float = field(default=0.5, metadata={"help": "prm: share of the live paths kept at each check"})
    threshold: float = field(
        default=0.5, metadata={"help": "parm: P(yes) from which a partial image is clear; parm++: the pick is right"}
    )
    potential: float = field(default=0.5, metadata={"help": "parm: a clear path whose potential P(yes) is below stops"})
    rounds: int = field(default=2, metadata={"help": "parm++: at most this many second tries after reflection"})

    def __post_init__(self):
        if self.candidates < 1 or self.checks < 1:
            raise ThinkdrawError("-N and --checks must be at least 1")
        if self.rounds < 0:
            raise ThinkdrawError("--rounds must be at least 0")
        if not 0 < self.keep <= 1 or not 0 < self.threshold < 1 or not 0 < self.potential < 1:
            raise ThinkdrawError("--keep must lie in (0, 1], --threshold and --potential in (0, 1)")
