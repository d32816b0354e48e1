"""Test-time verifiers over the engine: draw N candidates per prompt, let a judge pick one.

    bon   best-of-N: every candidate finished, the judge's P(yes) to the outcome question picks.
    prm   step-wise selection by a process judge: at each check step the live paths' partial images are
          judged ("is everything drawn so far right?") and the lower-scoring part of them stops drawing; the
          survivors are finished and the best by the same judge (at 100 percent) wins.
    parm  PARM (Guo et al. 2025): at each check step, a path not yet judged clear is asked whether enough is
          drawn to tell (clarity); at its first clear step, whether it can still become right (potential),
          and a "no" stops it there. The survivors are finished and picked best-of-N' by the outcome question.
          Pruned paths really stop: the engine drops their rows, so their compute is saved. A check that would
          stop every path still drawing for a prompt stops none of them (PARM's fall back to all).
    parm++  PARM, then reflection: the judge is asked whether the pick is right; if not, it says what is
          wrong, and the policy tries again with its earlier plan and that feedback in its context (a
          Revision: the policy must have learned second tries) under PARM, up to `rounds` times. The new
          pick replaces the old unless the outcome question scores it lower; the image tokens of every round
          count.

Checks are at `checks` evenly spaced image steps (never the last). A judge that cannot answer raises JudgeError:
the verifier stops with that error rather than picking on missing scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.judges.base import Judge, Query
from thinkdraw.policy.formats import Revision
from thinkdraw.verifiers.settings import VERIFIERS, VerifierSettings


@dataclass
class Pick:
    """One prompt's candidates and the judge's choice."""

    candidates: list  # the policy's Candidates, pruned ones with their partial image (candidate.drawn)
    chosen: int
    scores: list[float | None]  # the final judgment of each finished candidate; None where it was pruned
    image_tokens: int  # image tokens drawn for this prompt, all candidates together (every round of parm++)
    events: list[str] = field(default_factory=list)  # what the verifier did, step by step, for people
    feedback: list[str] = field(default_factory=list)  # parm++: the judge's feedback before each second try


def check_steps(num_image_tokens: int, checks: int) -> list[int]:
    """`checks` image steps spread evenly over 1 .. N - 1 (a check at N would save nothing)."""
    last = num_image_tokens - 1
    return sorted({max(1, round(last * (j + 1) / (checks + 1))) for j in range(checks)})


class _Watch:
    """The engine's on_image_step: judges partial images at the check steps and returns the rows to keep."""

    def __init__(self, kind: str, policy, judge: Judge, prompts: list[str], settings: VerifierSettings):
        self.kind, self.policy, self.judge, self.settings = kind, policy, judge, settings
        self.prompts = prompts  # per row
        self.plans: list[str | None] = [None] * len(prompts)  # per row, once written (read_plans)
        n, B = settings.candidates, len(prompts)
        self.steps = set(check_steps(policy.num_image_tokens, settings.checks))
        self.alive = torch.ones(B, dtype=torch.bool)
        self.clear = torch.zeros(B, dtype=torch.bool)
        self.groups = [list(range(g, g + n)) for g in range(0, B, n)]
        self.events: list[list[str]] = [[] for _ in self.groups]

    def read_plans(self, plans: list[str]) -> None:
        """The engine's on_plans: the rows' plans, which the partial-image questions carry to the judge."""
        self.plans = list(plans)

    def __call__(self, k: int, image_ids: torch.Tensor):
        if k not in self.steps:
            return None
        rows = self.alive.nonzero()[:, 0].tolist()
        if self.kind == "parm":
            rows = [i for i in rows if not self.clear[i]]  # a path is judged for potential once, when it clears
        if not rows:
            return None
        progress = k / self.policy.num_image_tokens
        images = self.policy.decode_partial(image_ids[rows], k)
        queries = {i: Query(self.prompts[i], im, self.plans[i], progress) for i, im in zip(rows, images, strict=True)}
        drop = self._prm(queries) if self.kind == "prm" else self._parm(queries, k)
        for g, group in enumerate(self.groups):
            live = [i for i in group if self.alive[i]]
            gone = [i for i in live if i in drop]
            if gone and len(gone) == len(live):
                self.events[g].append(f"step {k}: all {len(live)} live paths judged hopeless: none stopped")
                continue
            for i in gone:
                self.alive[i] = False
            if gone:
                self.events[g].append(f"step {k}: stopped {len(gone)} of {len(live)} paths")
        return self.alive.clone()

    def _prm(self, queries: dict) -> set[int]:
        rows = list(queries)
        scores = dict(zip(rows, self.judge.yes([queries[i] for i in rows], "process"), strict=True))
        drop = set()
        for group in self.groups:
            live = sorted((i for i in group if i in scores), key=lambda i: -scores[i])
            drop |= set(live[max(1, math.ceil(self.settings.keep * len(live))) :])
        return drop

    def _parm(self, queries: dict, k: int) -> set[int]:
        rows = list(queries)
        clear = self.judge.yes([queries[i] for i in rows], "clarity")
        now_clear = [i for i, p in zip(rows, clear, strict=True) if p >= self.settings.threshold]
        if not now_clear:
            return set()
        self.clear[now_clear] = True
        potential = self.judge.yes([queries[i] for i in now_clear], "potential")
        return {i for i, p in zip(now_clear, potential, strict=True) if p < self.settings.potential}


def verify(
    kind: str,
    policy,
    judge: Judge,
    prompts: Sequence[str],
    settings: VerifierSettings,
    sampling: SamplingSettings | None = None,
    seed: int = 0,
    think: bool = True,
    reasoning: str = "plan",
    indices: Sequence[int] | None = None,
    revisions: Sequence[Revision | None] | None = None,
) -> list[Pick]:
    """Draw settings.candidates per prompt with the policy and pick one per prompt with the judge.

    Seeds as policy.generate's: candidate j of prompt k comes from (seed, indices[k] * n + j), so a verifier's
    candidates are the ones plain sampling would draw, up to where they are stopped. `revisions`: second
    tries (one per prompt, None for a first), as parm++ makes them."""
    if kind not in VERIFIERS:
        raise ThinkdrawError(f"unknown verifier {kind!r}: choose one of {', '.join(VERIFIERS)}")
    indices = list(range(len(prompts))) if indices is None else list(indices)
    if kind == "parm++":
        return _parm_plus(policy, judge, list(prompts), settings, sampling, seed, think, reasoning, indices)
    n = settings.candidates
    rows = [p for p in prompts for _ in range(n)]
    watch = None if kind == "bon" else _Watch(kind, policy, judge, rows, settings)
    candidates = policy.generate(
        list(prompts),
        think=think,
        n=n,
        seed=seed,
        settings=sampling,
        on_image_step=watch,
        indices=indices,
        reasoning=reasoning,
        revisions=list(revisions) if revisions is not None else None,
        on_plans=watch.read_plans if watch is not None else None,
    )
    return _pick(kind, policy, judge, candidates, len(prompts), n, watch)


def _parm_plus(policy, judge: Judge, prompts, settings, sampling, seed, think, reasoning, indices) -> list[Pick]:
    """PARM, then up to settings.rounds second tries for the picks the judge's reflection finds wrong."""
    picks = verify("parm", policy, judge, prompts, settings, sampling, seed, think, reasoning, indices)
    for round_ in range(1, settings.rounds + 1):
        chosen = [p.candidates[p.chosen] for p in picks]
        right = judge.yes([Query(c.prompt, c.image, c.plan) for c in chosen], "reflect")
        wrong = [i for i, p in enumerate(right) if p < settings.threshold and chosen[i].plan is not None]
        if not wrong:
            break
        said = judge.feedback([Query(chosen[i].prompt, chosen[i].image, chosen[i].plan) for i in wrong])
        again = [(i, f) for i, f in zip(wrong, said, strict=True) if f]  # "" : the judge names nothing to fix
        if not again:
            break
        tries = verify(
            "parm",
            policy,
            judge,
            [prompts[i] for i, _ in again],
            settings,
            sampling,
            seed + round_,  # fresh candidates: other generators than the round before
            think,
            reasoning,
            [indices[i] for i, _ in again],
            [Revision(chosen[i].plan, f) for i, f in again],
        )
        for (i, f), new in zip(again, tries, strict=True):
            old = picks[i]
            note = f"round {round_}: reflection P(yes) {right[i]:.2f}; feedback: {f}"
            before, after = old.scores[old.chosen], new.scores[new.chosen]
            if after < before:  # the second try's pick is judged worse: the first stays
                old.image_tokens += new.image_tokens
                old.events += [note, f"round {round_}: the new pick scores {after:.2f} against {before:.2f}; kept"]
                old.feedback.append(f)
                continue
            new.image_tokens += old.image_tokens
            new.events = old.events + [note] + new.events
            new.feedback = old.feedback + [f]
            picks[i] = new
    return picks


def replay(kind: str, policy, judge: Judge, candidates: Sequence, settings: VerifierSettings) -> list[Pick]:
    """What `verify` would have picked, from candidates already drawn in full (settings.candidates per prompt, in
    groups): the checks run on their prefixes, which are exactly what a pruning run would have drawn up to
    each check (each row samples from its own generator). Benchmarks use it to score every N and every verifier
    on one set of samples; the pruned candidates come back as drawn in full, with `drawn` cut where they stop."""
    if kind not in VERIFIERS:
        raise ThinkdrawError(f"unknown verifier {kind!r}: choose one of {', '.join(VERIFIERS)}")
    if kind == "parm++":
        raise ThinkdrawError("parm++ draws again after feedback, so it cannot be replayed: run verify")
    n = settings.candidates
    if len(candidates) % n:
        raise ThinkdrawError(f"{len(candidates)} candidates are not groups of {n}")
    candidates = list(candidates)
    watch = None
    if kind != "bon":
        watch = _Watch(kind, policy, judge, [c.prompt for c in candidates], settings)
        watch.read_plans([c.plan for c in candidates])
        image_ids = torch.stack([c.image_tokens for c in candidates])  # [B, N]
        drawn = [policy.num_image_tokens] * len(candidates)
        for k in sorted(watch.steps):
            keep = watch(k, image_ids[:, :k])
            if keep is None:
                continue
            for i in (~keep).nonzero()[:, 0].tolist():
                drawn[i] = min(drawn[i], k)
        candidates = [
            c if d == policy.num_image_tokens else replace(c, drawn=d) for c, d in zip(candidates, drawn, strict=True)
        ]
    return _pick(kind, policy, judge, candidates, len(candidates) // n, n, watch)


def _pick(kind: str, policy, judge: Judge, candidates: list, prompts: int, n: int, watch) -> list[Pick]:
    """Judge the finished candidates (the outcome question; prm: its own process question at 100 percent) and
    pick the best of each prompt's group (ties: the first)."""
    final_question = "process" if kind == "prm" else "outcome"
    finished = [i for i, c in enumerate(candidates) if c.drawn is None]
    judged = judge.yes(
        [Query(candidates[i].prompt, candidates[i].image, candidates[i].plan) for i in finished], final_question
    )
    score_of = dict(zip(finished, judged, strict=True))
    picks = []
    for g in range(prompts):
        mine = list(range(g * n, (g + 1) * n))
        scores = [score_of.get(i) for i in mine]
        best = max((s, -j) for j, s in enumerate(scores) if s is not None)
        drawn = sum(policy.num_image_tokens if candidates[i].drawn is None else candidates[i].drawn for i in mine)
        events = watch.events[g] if watch is not None else []
        picks.append(Pick([candidates[i] for i in mine], -best[1], scores, drawn, events))
    return picks
