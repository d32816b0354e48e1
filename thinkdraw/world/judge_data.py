"""Training data for the world judges: images the policy drew (and scenes we render and spoil), labelled by the
exact detector, asked the judges' questions (thinkdraw.judges.prompts) with the answers they should give.

The detector labels the data here and scores the judges in benchmarks; a trained judge never calls it.

Rollouts are the policy's own samples (prompt -> plan -> image tokens), drawn once and stored in parts so an
interrupted run resumes; their flaws (a missing object, a blob between two boxes, a wrong colour) are what
a judge must learn to see. Scenes are solve_layout's right scenes, half of them given one mistake (with_error),
put through the VQ so they look like the policy's images.

Per image, with its record's GenEval rules:
    outcome, reflect  yes when the final image passes the rules
    process, potential  at a random check step: yes when the final image passes (the path leads somewhere right)
    clarity           at that step: yes when the partial image already gets the final image's verdict
    score             10 x the share of the record's include clauses the final image meets
    ground            one planned phrase ("red circle"): the box of the detected object of that shape and colour
                      nearest the planned box, or none
    feedback          what is wrong, in one sentence built from the first failure; "nothing" when right
    semantic          (text only) yes when the plan names what the prompt asks (check_plan's semantic part)
    spatial           the plan's boxes on a canvas: yes when they stand as the prompt says
    describe          every detected object, top to bottom, as a plan ("red circle (x0,y0),(x1,y1); ..."), or
                      none: no judge is asked this in use, but an image's yes/no label is one bit, and a judge
                      trained only on those learns to see slowly; its description supervises every object's
                      shape, colour and place (off with describe=False)
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import judge
from thinkdraw.judges.base import Query, format_box
from thinkdraw.judges.chat import Turn, turn_for
from thinkdraw.judges.rules import clause_share
from thinkdraw.plan import Plan, PlanError, PlanObject, draw_plan, parse_plan, to_grid
from thinkdraw.policy.vq import encode_images
from thinkdraw.verifiers.verify import check_steps
from thinkdraw.world.data import ERRORS, feedback_sentence, with_error
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import solve_layout
from thinkdraw.world.plans import plan_of_scene
from thinkdraw.world.render import render_image
from thinkdraw.world.spec import CANVAS, COLORS, NUMBERS, SHAPES, noun
from thinkdraw.world.splits import load_split

CHECKS = 8  # the partial-image steps judges are trained on: the verifiers' default check steps


@dataclass(frozen=True)
class Drawn:
    """One image with what it was drawn for: the record, the plan (None without one), its image tokens."""

    record: dict
    plan: str | None
    tokens: torch.Tensor  # [N] long


@dataclass(frozen=True)
class JudgeExample:
    query: Query
    ask: str  # a yes/no question (outcome, reflect, process, potential, clarity, semantic, spatial), score,
    # ground or feedback (thinkdraw.judges.chat.ASKS)
    answer: str  # what the judge should answer, as it would write it
    phrase: str | None = None  # ground: the object asked for

    @property
    def turn(self) -> Turn:
        return turn_for(self.query, self.ask, self.phrase)


# -- rollouts -----------------------------------------------------------------------------------------------------


def draw_rollouts(
    policy,
    split: str,
    prompts: int | Sequence[int],
    folder: Path,
    per_prompt: int,
    seed: int,
    batch: int,
    echo=print,
    sampling=None,
) -> None:
    """The policy's samples for the split's first `prompts` records, or the records at these indices
    (per_prompt each: plans and image tokens), stored in parts (folder/part-NNNNN.json + .npy); parts already
    there are kept, so a stopped run resumes. Sample j of record i is seeded by (seed, i * per_prompt + j).
    The sampling settings (the policy's own after a plan where `sampling` names none) are part of what a folder
    holds."""
    split_records = load_split(split)
    sampling = policy.resolve(sampling, after_plan=True)
    indices = list(range(min(prompts, len(split_records)))) if isinstance(prompts, int) else list(prompts)
    records = [split_records[i] for i in indices]
    folder.mkdir(parents=True, exist_ok=True)
    about = {"split": split, "per_prompt": per_prompt, "seed": seed, "records": indices, "sampling": asdict(sampling)}
    index = folder / "rollouts.json"
    if index.is_file() and json.loads(index.read_text()) != about:
        raise ThinkdrawError(f"{folder} holds rollouts of other settings ({index.read_text().strip()})")
    index.write_text(json.dumps(about) + "\n")
    per_part = max(1, batch // per_prompt)
    for start in range(0, len(records), per_part):
        name = folder / f"part-{start:05d}"
        if name.with_suffix(".npy").is_file():
            continue
        chunk = indices[start : start + per_part]
        candidates = policy.generate(
            [split_records[i]["prompt"] for i in chunk], n=per_prompt, seed=seed, settings=sampling, indices=chunk
        )
        meta = [{"record": chunk[j // per_prompt], "plan": c.plan} for j, c in enumerate(candidates)]
        name.with_suffix(".json").write_text(json.dumps(meta) + "\n")
        tokens = torch.stack([c.image_tokens for c in candidates]).to(torch.int16).numpy()
        np.save(folder / f"{name.name}.tmp.npy", tokens)
        (folder / f"{name.name}.tmp.npy").rename(name.with_suffix(".npy"))  # the part counts once its tokens are in
        echo(f"rollouts: {min(start + per_part, len(records))}/{len(records)} prompts")


def read_rollouts(folder: Path) -> list[Drawn]:
    index = folder / "rollouts.json"
    if not index.is_file():
        raise ThinkdrawError(
            f"{folder}: no rollouts here (no rollouts.json; make them with `thinkdraw world rollouts`)"
        )
    records = load_split(json.loads(index.read_text())["split"])
    drawn = []
    for tokens_file in sorted(folder.glob("part-[0-9][0-9][0-9][0-9][0-9].npy")):
        meta = json.loads(tokens_file.with_suffix(".json").read_text())
        tokens = torch.from_numpy(np.load(tokens_file).astype(np.int64))
        drawn += [Drawn(records[m["record"]], m["plan"], tokens[i]) for i, m in enumerate(meta)]
    return drawn


def rendered_scenes(policy, records: Sequence[dict], rng: random.Random, spoil: float = 0.5) -> list[Drawn]:
    """A right scene per record (solve_layout), a share `spoil` of them with one mistake, through the VQ."""
    scenes, plans = [], []
    for record in records:
        objects = solve_layout(record, rng)
        if rng.random() < spoil:
            objects = with_error(objects, rng.choice(ERRORS), rng) or objects
        scenes.append(render_image(objects))
        plans.append(plan_of_scene(objects).text())
    vq = policy.model.model.vqmodel
    tokens = torch.cat([encode_images(vq, scenes[i : i + 64]) for i in range(0, len(scenes), 64)])  # [B, N]
    return [Drawn(r, p, t) for r, p, t in zip(records, plans, tokens, strict=True)]


# -- labels -------------------------------------------------------------------------------------------------------


def grounded_box(phrase: str, planned: tuple, detections) -> tuple | None:
    """The grid box of the detected object the phrase names (shape, and colour when named) nearest the planned
    box, or None."""
    words = phrase.split()
    shape, color = words[-1], words[0] if len(words) > 1 else None
    found = [d for d in detections if d.label == shape and (color is None or d.color == color)]
    if not found:
        return None
    grid = [to_grid(tuple(round(v) for v in d.box), CANVAS) for d in found]
    centre = ((planned[0] + planned[2]) / 2, (planned[1] + planned[3]) / 2)
    return min(grid, key=lambda b: ((b[0] + b[2]) / 2 - centre[0]) ** 2 + ((b[1] + b[3]) / 2 - centre[1]) ** 2)


def described(detections) -> str:
    """The detected objects as a plan, top to bottom then left to right, or "none"."""
    if not detections:
        return "none"
    objects = [
        PlanObject(f"{d.color} {d.label}" if d.color else d.label, to_grid(tuple(round(v) for v in d.box), CANVAS))
        for d in detections
    ]
    objects.sort(key=lambda o: (o.box[1], o.box[0]))
    return Plan(tuple(objects)).text()


def judge_examples(
    policy, drawn: Sequence[Drawn], rng: random.Random, batch: int = 64, describe: bool = True
) -> list[JudgeExample]:
    """Every question about every image, labelled by the exact detector (see the module docstring)."""
    detector = WorldDetector()
    N = policy.num_image_tokens
    steps = check_steps(N, CHECKS)
    examples: list[JudgeExample] = []
    for start in range(0, len(drawn), batch):
        part = drawn[start : start + batch]
        tokens = torch.stack([d.tokens for d in part])
        finals = policy.decode(tokens)
        ks = [rng.choice(steps) for _ in part]
        partials = [policy.decode_partial(tokens[i : i + 1], k)[0] for i, k in enumerate(ks)]
        for d, image, partial, k in zip(part, finals, partials, ks, strict=True):
            examples += _examples_of(d, image, partial, k / N, detector, rng, describe)
    return examples


def _examples_of(
    d: Drawn, image, partial, progress: float, detector, rng: random.Random, describe: bool
) -> list[JudgeExample]:
    record = d.record
    detections = detector.detect(image)
    verdict = judge(record, detections)
    partial_verdict = judge(record, detector.detect(partial))
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    final = Query(record["prompt"], image, d.plan)
    drawing = Query(record["prompt"], partial, None, progress)
    out = [
        JudgeExample(final, "outcome", yes(verdict.correct)),
        JudgeExample(final, "reflect", yes(verdict.correct)),
        JudgeExample(drawing, "process", yes(verdict.correct)),
        JudgeExample(drawing, "potential", yes(verdict.correct)),
        JudgeExample(drawing, "clarity", yes(partial_verdict.correct == verdict.correct)),
        JudgeExample(final, "score", str(round(10 * clause_share(record, verdict)))),
        JudgeExample(final, "feedback", feedback_sentence(record, verdict)),
    ]
    if describe:
        out.append(JudgeExample(final, "describe", described(detections)))
    try:
        plan = parse_plan(d.plan) if d.plan else None
    except PlanError:
        plan = None
    if plan is None:
        return out
    obj = rng.choice(plan.objects)
    out.append(JudgeExample(final, "ground", format_box(grounded_box(obj.phrase, obj.box, detections)), obj.phrase))
    check = check_plan(plan, record)
    out.append(JudgeExample(Query(record["prompt"], None, d.plan), "semantic", yes(check.semantic)))
    if check.spatial is not None:
        canvas = Query(record["prompt"], draw_plan(plan, CANVAS, palette=COLORS), d.plan)
        out.append(JudgeExample(canvas, "spatial", yes(check.spatial)))
    return out


def judge_words(examples: Sequence[JudgeExample]) -> list[str]:
    """What a world judge's tokenizer must hold: every text it is trained on and the world's words (the
    tokenizer splits them into its pieces)."""
    texts = {e.turn.text for e in examples} | {e.answer for e in examples}
    world = [*COLORS, *SHAPES, *(noun(s, 2) for s in SHAPES), *NUMBERS.values(), "no"]
    return sorted(texts | set(world))


def labelled_examples(config, policy, echo=print) -> list[JudgeExample]:
    """What `thinkdraw train judge` learns from: every question about the rollouts' images and the rendered
    scenes (config.scenes of them), labelled (only config.asks where given); the same config gives the same
    examples."""
    rng = random.Random(config.seed)
    drawn = [d for folder in config.rollouts for d in read_rollouts(folder)]
    if config.scenes:
        records = load_split("train")
        drawn += rendered_scenes(policy, [rng.choice(records) for _ in range(config.scenes)], rng)
    echo(f"labelling {len(drawn)} images")
    examples = judge_examples(policy, drawn, rng, describe=config.describe)
    if config.asks:
        examples = [e for e in examples if e.ask in config.asks]
    counts = {}
    for e in examples:
        counts[e.ask] = counts.get(e.ask, 0) + 1
    echo("examples: " + ", ".join(f"{q} {n}" for q, n in sorted(counts.items())))
    return examples


def new_world_judge(config, examples: Sequence[JudgeExample]):
    """An untrained tiny LLaVA judge of the config's shape, its tokenizer holding the examples' words."""
    from thinkdraw.judges.vlm import new_llava_judge

    return new_llava_judge(
        judge_words(examples),
        patch=config.patch,
        hidden=config.hidden,
        layers=config.layers,
        seed=config.seed,
        vision_hidden=config.vision_hidden,
        vision_layers=config.vision_layers,
    )


def train_world_judge(config, echo=print):
    """`thinkdraw train judge`: a new tiny LLaVA judge (or the one in OUT, resumed) on the rollouts' and
    rendered scenes' examples."""
    from thinkdraw.policy.model import Policy
    from thinkdraw.runtime import Runtime
    from thinkdraw.trainers.judge import train_judge
    from thinkdraw.world.registry import ENVIRONMENT, SHIPPED_MODELS

    Runtime.create(config.device, "float32", config.threads)  # the threads for labelling too
    policy = Policy.load(SHIPPED_MODELS.get(config.model, config.model))
    examples = labelled_examples(config, policy, echo)
    chat = None if config.resume else new_world_judge(config, examples)
    pairs = [(e.turn, e.answer) for e in examples]
    return train_judge(chat, pairs, config, {"environment": ENVIRONMENT}, echo=echo)
