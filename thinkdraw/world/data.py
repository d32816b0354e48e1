"""Training examples from the shapes world: prompt, plan and the image drawn from that plan.

Plans are written like an LLM's chains of thought would be: mostly right, but a share of
them (`error_rate`, 15% by default) carries exactly one mistake: an object of the wrong
colour or shape, one missing, one extra, or objects in the wrong places. The image always
follows the plan, mistakes included, so the model learns to draw what it planned, and a
wrong plan leads to a wrong image: something real for later rewards to correct.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import Verdict, judge
from thinkdraw.policy.formats import Revision
from thinkdraw.trainers.sft import Example
from thinkdraw.world.layout import as_detections, place, scatter, solve_layout
from thinkdraw.world.plans import plan_of_scene
from thinkdraw.world.render import WorldObject, render_image
from thinkdraw.world.spec import COLORS, NUMBERS, SHAPES, noun
from thinkdraw.world.splits import load_split

ERRORS = ("color", "shape", "missing", "extra", "misplaced")


@dataclass(frozen=True)
class WorldExample:
    prompt: str
    plan: str
    objects: tuple[WorldObject, ...]  # what the image shows (= what the plan says)
    error: str | None  # which mistake the plan carries, None when it is right


def rationale_of(record: dict) -> str:
    """ReasonGen-R1's format in world words: the scene restated with every attribute the prompt sets resolved
    (counts as numbers, colours named, facts looked up), no boxes. "a photo of a star the colour of grass left
    of two squares" -> "two squares, one green star left of the squares"."""
    include = record["include"]

    def phrase(clause: dict) -> str:
        color = f"{clause['color']} " if "color" in clause else ""
        return f"{NUMBERS[clause['count']]} {color}{noun(clause['class'], clause['count'])}"

    parts = []
    for clause in include:
        text = phrase(clause)
        if "position" in clause:
            relation, target = clause["position"]
            text += f" {relation} the {noun(include[target]['class'], include[target]['count'])}"
        parts.append(text)
    return ", ".join(parts)


def with_error(objects: list[WorldObject], kind: str, rng: random.Random) -> list[WorldObject] | None:
    """The scene with one mistake of `kind`; None when that mistake cannot be made here."""
    objects = list(objects)
    i = rng.randrange(len(objects))
    if kind == "color":
        objects[i] = replace(objects[i], color=rng.choice([c for c in COLORS if c != objects[i].color]))
    elif kind == "shape":
        objects[i] = replace(objects[i], shape=rng.choice([s for s in SHAPES if s != objects[i].shape]))
    elif kind == "missing":
        if len(objects) == 1:
            return None
        del objects[i]
    elif kind == "extra":
        extra = place(rng, [(o.shape, o.color) for o in objects] + [(objects[i].shape, rng.choice(list(COLORS)))])
        if extra is None:
            return None
        objects = extra
    elif kind == "misplaced":
        objects = scatter(rng, [(o.shape, o.color) for o in objects])
    return objects


def feedback_sentence(record: dict, verdict: Verdict) -> str:
    """What is wrong, in one sentence of world words, from the first failure ("nothing" when right)."""
    if verdict.correct:
        return "nothing"
    failure = verdict.failures[0]
    if failure.kind == "exclude":
        clause = record["exclude"][failure.clause]
        return f"There are too many {noun(clause['class'], 2)}."
    clause = record["include"][failure.clause]
    name, count = clause["class"], clause["count"]
    if failure.kind == "count":
        found = len(verdict.detections.get(name, []))
        number = "no" if found == 0 else NUMBERS.get(found, str(found))
        return f"There {'is' if found == 1 else 'are'} {number} {noun(name, found)}, not {NUMBERS[count]}."
    if failure.kind == "color":
        return f"The {noun(name, count)} {'is' if count == 1 else 'are'} not {clause['color']}."
    relation, target = clause["position"]
    other = noun(record["include"][target]["class"], record["include"][target]["count"])
    return f"The {noun(name, count)} {'is' if count == 1 else 'are'} not {relation} the {other}."


def is_right(objects: list[WorldObject], record: dict) -> bool:
    """Whether a plan of these objects passes check_plan against the prompt."""
    check = check_plan(plan_of_scene(objects), record)
    return check.semantic and check.spatial is not False


def world_example(record: dict, rng: random.Random, error_rate: float = 0.15) -> WorldExample:
    objects = solve_layout(record, rng)
    error = None
    if rng.random() < error_rate:
        for kind in rng.sample(ERRORS, len(ERRORS)):
            wrong = with_error(objects, kind, rng)
            # a change the prompt does not care about (a colour it does not name, objects moved where it
            # names no relation) is no mistake: try the next kind (a changed shape always is one, as the
            # scene holds exactly the objects the prompt names)
            if wrong is not None and not is_right(wrong, record):
                objects, error = wrong, kind
                break
    return WorldExample(record["prompt"], plan_of_scene(objects).text(), tuple(objects), error)


def revision_example(record: dict, rng: random.Random) -> Example | None:
    """A second try (PARM++'s self-correction): a flawed plan of the prompt and the feedback on its picture,
    then a right plan and its image; None when no mistake of any kind can be made here."""
    right = solve_layout(record, rng)
    for kind in rng.sample(ERRORS, len(ERRORS)):
        wrong = with_error(right, kind, rng)
        if wrong is None or is_right(wrong, record):
            continue
        verdict = judge(record, as_detections(wrong))
        if verdict.correct:
            continue
        revision = Revision(plan_of_scene(wrong).text(), feedback_sentence(record, verdict))
        return Example(record["prompt"], plan_of_scene(right).text(), render_image(right), None, revision)
    return None


class WorldExamples:
    """The SFT trainer's example source (`thinkdraw.trainers.sft.ExampleSource`): a split's prompts, each
    with a fresh scene its rules accept, its plan, and the rendered image; a share `revise_rate` of them
    (with errors on) a second try after feedback."""

    name = "world"

    def __init__(self, split: str = "train", error_rate: float = 0.15, revise_rate: float = 0.0):
        self.records = load_split(split)
        self.error_rate, self.revise_rate = error_rate, revise_rate

    def example(self, rng: random.Random, with_errors: bool) -> Example:
        record = rng.choice(self.records)
        if with_errors and self.revise_rate and rng.random() < self.revise_rate:
            revision = revision_example(record, rng)
            if revision is not None:
                return revision
        made = world_example(record, rng, self.error_rate if with_errors else 0.0)
        rationale = rationale_of(record) if made.error is None else None  # a rationale the image follows
        return Example(made.prompt, made.plan, render_image(made.objects), rationale)


def train_world_policy(config, echo=print):
    """`thinkdraw train policy`: the world policy on the train split's examples; stage base starts a new
    world model around the VQ checkpoint config.init, stage sft the policy at config.init, given plan-guided
    positions (`--layout`) when it has none (unless resuming)."""
    from transformers import JanusVQVAE

    from thinkdraw.checkpoint import load_model
    from thinkdraw.policy.model import Policy
    from thinkdraw.trainers.sft import train_policy
    from thinkdraw.world.model import new_world_policy, with_layout, with_revision

    start = None
    if config.stage == "base" and not config.resume:
        vq = load_model(JanusVQVAE, config.init)
        start = new_world_policy(vq, config.hidden, config.layers, config.seed, layout=config.layout)
    elif not config.resume:
        start = Policy.load(config.init)
        start = with_layout(start) if config.layout else start
        start = with_revision(start) if config.revise_rate else start
    examples = WorldExamples("train", config.error_rate, config.revise_rate)
    return train_policy(config, examples, start, echo=echo)


def world_run(config) -> tuple[list[dict], object, object]:
    """What a world GRPO or DPO run needs besides its config: the records it trains on (config.prompts, else the
    train split), its reward (the geneval reward reads the world's exact detector, judged rewards the judge
    config.judge names: world is the shipped world judge) and, with config.held_out_every, held-back prompts
    (the file's last config.held_out_prompts records, else val prompts spread over the split) scored by that
    reward and, when it is not geneval itself, by the exact evaluator too."""
    from thinkdraw.evaluator.geneval import read_jsonl
    from thinkdraw.rewards import geneval_reward
    from thinkdraw.trainers.rollouts import HeldOut, RunError, run_reward
    from thinkdraw.world.detector import WorldDetector
    from thinkdraw.world.plans import layout_rules
    from thinkdraw.world.registry import SHIPPED_JUDGES

    records = read_jsonl(config.prompts) if config.prompts else load_split("train")
    reward = run_reward(config, detector=WorldDetector(), judges=SHIPPED_JUDGES, layout=layout_rules)
    if not config.held_out_every:
        return records, reward, None
    n = config.held_out_prompts
    if config.prompts:
        if n >= len(records):
            raise RunError(f"--prompts {config.prompts}: {len(records)} records, not more than --held-out-prompts {n}")
        records, held = records[:-n], records[-n:]
    else:
        val = load_split("val")
        held = [val[i * len(val) // n] for i in range(min(len(val), n))]
    measures = {"reward": reward}
    if config.reward != "geneval":
        measures["exact"] = geneval_reward(WorldDetector())
    return records, reward, HeldOut(held, measures, config.held_out_every)


def train_world_grpo(config, echo=print):
    """`thinkdraw train grpo`: GRPO of the policy at config.init on the train split's prompts (world_run)."""
    from thinkdraw.trainers.grpo import train_grpo
    from thinkdraw.world.registry import ENVIRONMENT

    records, reward, held = world_run(config)
    return train_grpo(config, records, reward, echo=echo, meta={"environment": ENVIRONMENT}, held_out=held)


def train_world_dpo(config, echo=print):
    """`thinkdraw train dpo`: DPO of the policy at config.init on the train split's prompts (world_run)."""
    from thinkdraw.trainers.dpo import train_dpo
    from thinkdraw.world.registry import ENVIRONMENT

    records, reward, held = world_run(config)
    return train_dpo(config, records, reward, echo=echo, meta={"environment": ENVIRONMENT}, held_out=held)
