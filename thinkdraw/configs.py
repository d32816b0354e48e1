"""Config dataclasses of the commands that load models (one per command; the CLI is built from them).

A field's metadata carries its help text (and, optionally, a short flag or that it is positional); a
field whose type is itself a config dataclass (SamplingSettings) has its fields offered as options of
their own, so each knob is defined once. __post_init__ validates, and an option that the chosen mode
ignores (set to anything but its default) is an error, not silence.

They import nothing heavy, so `thinkdraw --help` and the world and eval commands start fast;
the code that runs them (trainers, policy) imports torch and transformers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.layouts import BENCHMARKS
from thinkdraw.evaluator.t2icompbench import SCORED as T2I_CATEGORIES
from thinkdraw.evaluator.t2icompbench import check_category
from thinkdraw.judges.chat import ASKS
from thinkdraw.plan import REASONING
from thinkdraw.rewards import JUDGED, JUDGED_BY, PLAN_ONLY, spec_names  # PIL and the rule engine: no torch
from thinkdraw.runtime import DEVICES, DTYPES
from thinkdraw.verifiers.settings import VERIFIERS, VerifierSettings

STAGES = ("base", "sft")


def option(default: Any = dataclasses.MISSING, help: str = "", short: str | None = None, argument: bool = False):
    """A config field with CLI help. `argument=True` makes it positional."""
    meta = {"help": help, "short": short, "argument": argument}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: type, help: str = ""):
    """A field holding a config dataclass whose fields become options of the command."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "nested": True})


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def changed(config, name: str) -> bool:
    """Whether a field holds something other than its default."""
    f = next(f for f in dataclasses.fields(config) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return getattr(config, name) != default


def reject_ignored(config, names: tuple[str, ...], why: str) -> None:
    """ThinkdrawError when any of these options was set although `why` says it is not used."""
    given = [flag(n) for n in names if changed(config, n)]
    if given:
        raise ThinkdrawError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} not used {why}")


def check_runtime(device: str, threads: int) -> None:
    if device.split(":")[0] not in DEVICES:
        raise ThinkdrawError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    if threads < 0:
        raise ThinkdrawError("--threads must be >= 0 (0: torch's default)")


def check_steps(config) -> None:
    """The step loop's options: accumulation divides the batch, clip and runtime are valid."""
    if config.accumulation < 1 or config.batch_size % config.accumulation:
        raise ThinkdrawError(f"--accumulation {config.accumulation} must divide --batch-size {config.batch_size}")
    if config.clip < 0:
        raise ThinkdrawError("--clip must be >= 0 (0: no clip)")
    check_runtime(config.device, config.threads)


def check_resume(resume: bool, out: Path) -> None:
    if not resume:
        return
    from thinkdraw.checkpoint import finish_interrupted_save  # torch: only when resuming

    if not finish_interrupted_save(out / "checkpoint"):
        raise ThinkdrawError(f"--resume: no checkpoint at {out / 'checkpoint'}")


@dataclass(kw_only=True)
class StepLoopOptions:
    """The step loop's options (thinkdraw.trainers.common.run_steps) that every trainer's config shares (GRPO and
    DPO set their own save_every and accumulation); each config checks them."""

    save_every: int = option(500, "checkpoint every this many steps")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes; 0: no limit")
    accumulation: int = option(1, "split each step's batch into this many micro-batches (same update, less memory)")
    clip: float = option(1.0, "clip the gradient norm to this (0: no clip)")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")
    seed: int = option(0, "random seed (data, initialisation, samples)")
    resume: bool = option(False, "continue from OUT/checkpoint")


@dataclass(kw_only=True)
class LabelledImageOptions:
    """What the world's learned judges learn from: the policy's rollouts and spoilt rendered scenes, labelled by
    the exact detector."""

    rollouts: list[Path] = option([], "rollout folders (`thinkdraw world rollouts`) to learn from")
    scenes: int = option(2000, "rendered scenes added (half given one mistake), through the policy's VQ")
    model: str = option("sft", "the policy whose VQ decodes the images and partial images (sft, base, a path)")

    def check_sources(self) -> None:
        for folder in self.rollouts:
            if not folder.is_dir():
                raise ThinkdrawError(f"--rollouts {folder}: no such folder")
        if not self.rollouts and self.scenes < 1:
            raise ThinkdrawError("nothing to learn from: give --rollouts folders or --scenes N")


@dataclass
class TrainVQConfig(StepLoopOptions):
    """Train the VQ image tokenizer on rendered world scenes."""

    out: Path = option(Path("runs/vq"), "run folder: checkpoint/ and log.jsonl go here")
    steps: int = option(4000, "optimizer steps")
    batch_size: int = option(16, "scenes per batch")
    lr: float = option(2e-3, "peak learning rate (Adam), cosine decay after warm-up")
    warmup: int = option(100, "warm-up steps")
    codebook: int = option(4096, "codebook size (image-token vocabulary)")
    grid: int = option(16, "image tokens per side: 16 (one per 4x4-pixel patch) or 8 (8x8)")
    object_weight: float = option(4.0, "reconstruction weight of pixels on or next to objects (background: 1)")
    max_objects: int = option(8, "scenes have 1 to this many objects")
    codebook_scenes: int = option(3000, "random scenes whose most common distinct patches become the codebook")
    bf16: bool = option(True, "decode under bfloat16 autocast while training (tokens stay float32)")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ThinkdrawError("--steps and --batch-size must be at least 1")
        check_steps(self)
        if self.grid not in (8, 16):
            raise ThinkdrawError(f"--grid {self.grid}: choose 8 or 16")
        if not 1 <= self.max_objects <= 12:
            raise ThinkdrawError("--max-objects must be between 1 and 12")
        check_resume(self.resume, self.out)


@dataclass
class TrainPolicyConfig(StepLoopOptions):
    """Train the world policy: stage base (prompt -> image) or sft (prompt -> plan -> image)."""

    stage: str = option(help="base or sft", argument=True)
    init: Path = option(help="base: a VQ checkpoint; sft: a base policy checkpoint", argument=True)
    out: Path = option(Path("runs/policy"), "run folder: checkpoint/ and log.jsonl go here")
    steps: int = option(3000, "optimizer steps")
    batch_size: int = option(32, "sequences per batch")
    lr: float = option(1e-3, "peak learning rate (AdamW), cosine decay after warm-up")
    warmup: int = option(100, "warm-up steps")
    text_weight: float = option(2.0, "loss weight of plan tokens")
    image_weight: float = option(1.0, "loss weight of image tokens")
    drop_rate: float = option(0.1, "share of rows whose prompt and plan are dropped (CFG's unconditional branch)")
    think_rate: float = option(0.8, "sft: share of rows with a plan (the rest draw directly)")
    error_rate: float = option(0.15, "sft: share of plans that carry one mistake (the image follows the plan)")
    rationale_rate: float = option(0.3, "sft: share of thinking rows that write a rationale instead of a plan")
    revise_rate: float = option(
        0.0,
        "sft: share of examples that are a second try (PARM++): a flawed plan and the feedback on its picture, "
        "then the right plan and picture (adds the revise tokens to a model without them)",
    )
    bf16: bool = option(True, "forward under bfloat16 autocast (weights, optimizer and loss stay float32)")
    layout: bool = option(True, "plan-guided positions: image patches are told the planned box they lie in")
    hidden: int = option(192, "base: LM width")
    layers: int = option(6, "base: LM layers")

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ThinkdrawError(f"unknown stage {self.stage!r}; choose base or sft")
        if not self.init.is_dir():
            raise ThinkdrawError(f"{self.init}: no such checkpoint folder")
        if self.steps < 1 or self.batch_size < 1:
            raise ThinkdrawError("--steps and --batch-size must be at least 1")
        for name in ("drop_rate", "think_rate", "error_rate", "rationale_rate", "revise_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ThinkdrawError(f"{flag(name)} must be between 0 and 1")
        if self.stage == "base":
            reject_ignored(
                self,
                ("think_rate", "error_rate", "rationale_rate", "revise_rate", "text_weight"),
                "by stage base (it writes no plans)",
            )
        else:
            reject_ignored(self, ("hidden", "layers"), "by stage sft (the model's size is its init's)")
        check_steps(self)
        check_resume(self.resume, self.out)


@dataclass
class TrainJudgeConfig(StepLoopOptions, LabelledImageOptions):
    """Train a world judge (a tiny LLaVA) on the policy's rollouts and spoilt scenes, labelled by the detector."""

    out: Path = option(Path("runs/judge"), "run folder: checkpoint/ and log.jsonl go here")
    steps: int = option(3000, "optimizer steps")
    batch_size: int = option(32, "examples per batch")
    lr: float = option(1e-3, "peak learning rate (AdamW), cosine decay after warm-up")
    warmup: int = option(100, "warm-up steps")
    hidden: int = option(128, "the judge's language model width")
    layers: int = option(4, "the judge's language model layers")
    vision_hidden: int = option(64, "the vision tower's width")
    vision_layers: int = option(2, "the vision tower's layers")
    patch: int = option(8, "vision patch size in pixels (64-pixel images)")
    describe: bool = option(
        False,
        "also teach it to list the objects it sees with their boxes (a dense signal; it did not raise the yes/no "
        "answers' accuracy in benchmarks/judge_ablation.py)",
    )
    asks: list[str] = option([], "learn only these questions (outcome, process, clarity, ...); empty: all")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ThinkdrawError("--steps and --batch-size must be at least 1")
        self.check_sources()
        if 64 % self.patch:
            raise ThinkdrawError(f"--patch {self.patch} must divide the 64-pixel image")
        unknown = sorted(set(self.asks) - set(ASKS))
        if unknown:
            raise ThinkdrawError(f"--asks: no question {', '.join(unknown)} (one of {', '.join(ASKS)})")
        check_steps(self)
        check_resume(self.resume, self.out)


@dataclass
class TrainDetectorConfig(StepLoopOptions, LabelledImageOptions):
    """Train the world's learned detector (the rule judge's eyes) on the policy's rollouts and spoilt scenes,
    labelled by the exact detector."""

    out: Path = option(Path("runs/detector"), "run folder: data.npz, checkpoint/ and log.jsonl go here")
    steps: int = option(4000, "optimizer steps")
    batch_size: int = option(32, "images per batch")
    lr: float = option(2e-3, "peak learning rate (AdamW), cosine decay after warm-up")
    warmup: int = option(100, "warm-up steps")
    width: int = option(64, "the net's channels")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.width < 8 or self.width % 8:
            raise ThinkdrawError("--steps and --batch-size must be at least 1, --width a multiple of 8")
        self.check_sources()
        check_steps(self)
        check_resume(self.resume, self.out)


@dataclass
class ServeJudgeConfig:
    """Serve a local judge over an OpenAI-compatible API (chat completions with log-probs), as vLLM would."""

    judge: str = option(
        "world", "the judge: world (the shipped world judge), a local folder, or a hub id", argument=True
    )
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(8000, "port to listen on")
    model_name: str = option("thinkdraw-judge", "the model name the API reports")
    max_batch: int = option(16, "requests answered in one forward")
    max_queue: int = option(256, "requests waiting at most; beyond it the server answers 503 (retry later)")
    log_requests: bool = option(False, "log every request on stderr")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ThinkdrawError(f"--port {self.port}: choose 0-65535")
        if self.max_batch < 1 or self.max_queue < 1:
            raise ThinkdrawError("--max-batch and --max-queue must be at least 1")
        check_runtime(self.device, self.threads)


# -- GRPO (thinkdraw.trainers.grpo) ----------------------------------------------------------------------------
GRPO_LEVELS = ("token", "sequence")
ENTROPY_OPTIONS = tuple(f"entropy_{kind}_{part}" for kind in ("text", "image") for part in ("target", "step", "limit"))


@dataclass(kw_only=True)
class RolloutOptions(StepLoopOptions):
    """The options GRPO and DPO share (the prompts, the judge, thinking, sampling, LoRA, held-out scoring, the
    loop's budget and runtime), their checks, whether the reward needs a judge, and the sampling settings. Each
    config adds its own (reward, out, steps, ...) and calls check_rollout_options from its __post_init__."""

    prompts: Path | None = option(
        None,
        "GenEval metadata JSONL to train on (its last --held-out-prompts records held back with --held-out-every) "
        "[default: the world's train split; val prompts held back]",
    )
    judge: str = option("world", "for judged rewards: world (the shipped world judge), a folder, a hub id or a url")
    judged_by: str = option("yes", "judged rewards: the judge's P(yes) (yes) or its 0-10 rating (score, GoT-R1's)")
    think: bool = option(True, "write a plan (or rationale) before drawing; its tokens are trained too")
    reasoning: str = option("plan", "what thinking writes: plan (objects with boxes, GoT-R1) or rationale")
    cfg_scale: float = option(
        1.0, "guidance while sampling (1 = off, ReasonGen-R1); the log-probs trained are the guided distribution's"
    )
    temperature: float = option(
        1.0, "image-token temperature of the samples (> 0; 0 = greedy with --plan-only, whose images are never trained)"
    )
    text_temperature: float = option(1.0, "plan-token temperature of the samples (> 0)")
    max_think_tokens: int = option(128, "plan length at which [boi] is forced")
    lora_rank: int = option(
        0,
        "LoRA rank on the language model's attention and MLP projections (0: train all but the VQ; GoT-R1: 32); "
        "the checkpoint holds the merged weights",
    )
    lora_alpha: float = option(0.0, "LoRA's alpha (scale alpha / rank); 0: the rank (scale 1)")
    gradient_checkpointing: bool = option(
        False, "recompute the language model's layers in the backward pass: less memory, more time"
    )
    held_out_every: int = option(
        0, "every this many updates, draw held-back prompts and log their reward and exact score (0: off)"
    )
    held_out_prompts: int = option(64, "--held-out-every: held-back prompts drawn (one image each)")

    def check_rollout_options(self, rows: int, trains_images: bool = True) -> None:
        """The shared options' checks; `rows`: the sequences of one update, which accumulation splits;
        `trains_images`: whether image tokens are sampled to be trained (else only held-out images are drawn, which
        may be greedy)."""
        if self.reasoning not in REASONING:
            raise ThinkdrawError(f"--reasoning {self.reasoning!r}: choose one of {', '.join(REASONING)}")
        if self.judged_by not in JUDGED_BY:
            raise ThinkdrawError(f"--judged-by {self.judged_by!r}: choose one of {', '.join(JUDGED_BY)}")
        if not self.needs_judge:
            reject_ignored(self, ("judge", "judged_by"), f"by the reward {self.reward!r} (it asks no judge)")
        if self.cfg_scale < 1:
            raise ThinkdrawError(f"--cfg-scale {self.cfg_scale}: it must be >= 1 (1 = no guidance)")
        if self.text_temperature <= 0 or self.temperature < 0 or (trains_images and self.temperature == 0):
            raise ThinkdrawError("--temperature and --text-temperature must be positive: the run compares samples")
        if self.max_think_tokens < 1:
            raise ThinkdrawError("--max-think-tokens must be at least 1")
        if not self.think:
            reject_ignored(
                self, ("reasoning", "text_temperature", "max_think_tokens"), "with --no-think (nothing is planned)"
            )
        if self.lora_rank < 0 or self.lora_alpha < 0:
            raise ThinkdrawError("--lora-rank and --lora-alpha must be >= 0 (rank 0: no LoRA)")
        if not self.lora_rank:
            reject_ignored(self, ("lora_alpha",), "without --lora-rank")
        if not 1 <= self.accumulation <= rows:
            raise ThinkdrawError(f"--accumulation {self.accumulation}: choose 1 to {rows} (the sequences of an update)")
        if self.clip < 0:
            raise ThinkdrawError("--clip must be >= 0 (0: no clip)")
        if self.prompts is not None and not self.prompts.is_file():
            raise ThinkdrawError(f"--prompts {self.prompts}: no such file")
        if self.held_out_every < 0 or self.held_out_prompts < 1:
            raise ThinkdrawError("--held-out-every must be >= 0 (0: off) and --held-out-prompts >= 1")
        if not self.held_out_every:
            reject_ignored(self, ("held_out_prompts",), "without --held-out-every")
        check_runtime(self.device, self.threads)
        check_resume(self.resume, self.out)

    @property
    def needs_judge(self) -> bool:
        """Whether the reward spec names a judged reward (every name but geneval)."""
        return any(name in JUDGED or name == "got" for name in spec_names(self.reward))

    @property
    def sampling(self) -> SamplingSettings:
        """How rollouts are drawn, and so what the log-probs are taken under (no top-k: every token keeps a
        finite log-prob)."""
        return SamplingSettings(
            cfg_scale=self.cfg_scale,
            temperature=self.temperature,
            text_temperature=self.text_temperature,
            max_think_tokens=self.max_think_tokens,
        )


@dataclass(kw_only=True)
class TrainGRPOConfig(RolloutOptions):
    """GRPO on a policy's plan and image tokens (GoT-R1, ReasonGen-R1): groups of rollouts per prompt, scored by
    a reward, each rollout pushed up or down by how it did against its group."""

    init: Path = option(help="the policy checkpoint folder to start from (an SFT policy that plans)", argument=True)
    out: Path = option(Path("runs/grpo"), "run folder: checkpoint/ and log.jsonl go here")
    steps: int = option(400, "optimizer updates (ReasonGen-R1: 400; GoT-R1: 1000)")
    prompts_per_batch: int = option(4, "prompts per batch of rollouts (ReasonGen-R1: 32; GoT-R1: 8)")
    group_size: int = option(8, "candidates per prompt: the group each is compared with (GoT-R1: 16)")
    updates_per_batch: int = option(2, "optimizer updates on each batch of rollouts (ReasonGen-R1: 2)")
    lr: float = option(
        5e-5,
        "peak learning rate (AdamW), cosine decay after warm-up; 5e-5 for the small world model (our choice: "
        "its SFT ran at 3e-4, the papers' rates are for 7B models); Janus-Pro-7B: 5e-6 (ReasonGen-R1) or 1e-5 "
        "with LoRA (GoT-R1)",
    )
    warmup: int = option(10, "warm-up updates")
    ratio_clip: float = option(0.2, "PPO's clip of the probability ratio, 1 +- this")
    kl_beta: float = option(0.0, "weight of the KL to the initial policy (0: no reference model, ReasonGen-R1)")
    level: str = option("token", "loss average: token (over all counted tokens) or sequence (per rollout first)")
    reward: str = option(
        "geneval", "reward spec (thinkdraw.rewards.build_reward): geneval, got, binary, plan, pi*ri..."
    )
    plan_only: bool = option(
        False,
        "train the plan alone: rollouts stop at [boi], no image is drawn, only plan tokens count; the reward must "
        "read the plan (plan, sem, spa)",
    )
    entropy: bool = option(False, "ReasonGen-R1's adaptive entropy terms -c_txt*H_txt - c_img*H_img")
    entropy_text_target: float = option(2.0, "--entropy: text entropy to track, nats (ReasonGen-R1 on Janus-Pro-7B)")
    entropy_image_target: float = option(
        7.0, "--entropy: image entropy to track, nats (ReasonGen-R1 on Janus-Pro-7B; log the world model's first)"
    )
    entropy_text_step: float = option(1e-4, "--entropy: change of the text coefficient per update")
    entropy_image_step: float = option(1e-4, "--entropy: change of the image coefficient per update")
    entropy_text_limit: float = option(5e-3, "--entropy: |text coefficient| at most (ReasonGen-R1: 5e-3)")
    entropy_image_limit: float = option(5e-3, "--entropy: |image coefficient| at most (ReasonGen-R1: 5e-3)")
    max_skipped: int = option(20, "stop after this many batches in a row without signal (every group's rewards equal)")
    save_every: int = option(50, "checkpoint every this many updates")
    accumulation: int = option(1, "split each update's rollouts into this many micro-batches (less memory)")

    def __post_init__(self):
        if not self.init.is_dir():
            raise ThinkdrawError(f"{self.init}: no such checkpoint folder")
        if min(self.steps, self.prompts_per_batch, self.updates_per_batch, self.save_every) < 1:
            raise ThinkdrawError("--steps, --prompts-per-batch, --updates-per-batch, --save-every must be >= 1")
        if self.group_size < 2:
            raise ThinkdrawError(f"--group-size {self.group_size}: a group needs at least 2 candidates to compare")
        if self.lr <= 0 or self.warmup < 0:
            raise ThinkdrawError("--lr must be positive and --warmup >= 0")
        if self.ratio_clip <= 0 or self.kl_beta < 0:
            raise ThinkdrawError("--ratio-clip must be positive and --kl-beta >= 0 (0: no KL term)")
        if self.level not in GRPO_LEVELS:
            raise ThinkdrawError(f"--level {self.level!r}: choose token or sequence")
        if not self.entropy:
            reject_ignored(self, ENTROPY_OPTIONS, "without --entropy")
        if any(getattr(self, name) < 0 for name in ENTROPY_OPTIONS):
            raise ThinkdrawError("the entropy targets, steps and limits must be >= 0")
        if self.max_skipped < 0:
            raise ThinkdrawError("--max-skipped must be >= 0")
        if self.plan_only and not (self.think and self.reasoning == "plan"):
            raise ThinkdrawError("--plan-only trains a plan: it needs thinking in the plan format")
        if self.plan_only and not spec_names(self.reward) <= set(PLAN_ONLY):
            raise ThinkdrawError(
                f"--plan-only draws no image: the reward {self.reward!r} must read the plan alone "
                f"({', '.join(PLAN_ONLY)})"
            )
        self.check_rollout_options(self.prompts_per_batch * self.group_size, trains_images=not self.plan_only)


# -- DPO (thinkdraw.trainers.dpo) ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TrainDPOConfig(RolloutOptions):
    """DPO and iterative DPO ("verify and reinforce"): pairs of the policy's own samples, the better by a reward
    chosen, the worse rejected; round after round, each sampling with the policy the last one trained."""

    init: Path = option(help="the policy checkpoint folder to start from (an SFT policy that plans)", argument=True)
    out: Path = option(Path("runs/dpo"), "run folder: checkpoint/, rounds/R/ (each round's weights), log.jsonl")
    rounds: int = option(
        1, "rounds of sample -> rank -> train (1: DPO; more: iterative DPO, the reference being each round's start)"
    )
    prompts_per_round: int = option(256, "prompts sampled each round: at most one pair each")
    candidates: int = option(4, "samples per prompt: the best and the worst by the reward make its pair")
    steps_per_round: int = option(100, "optimizer updates each round")
    batch_size: int = option(8, "pairs per update")
    lr: float = option(2e-5, "peak learning rate (AdamW), cosine decay over all rounds after warm-up")
    warmup: int = option(10, "warm-up updates")
    beta: float = option(0.1, "DPO's beta ('verify and reinforce': 0.1)")
    plan_tokens: bool = option(
        True, "sum the plan's log-probs with the image's (the paper, drawing without plans, sums image tokens only)"
    )
    reward: str = option(
        "pi",
        "how samples are ranked (thinkdraw.rewards spec): pi (the judge's P(yes) that the image shows the "
        "prompt: the outcome reward model), geneval (GenEval's rules over the detector), got, binary...",
    )
    sample_batch: int = option(32, "samples drawn (and ranked, and scored by the reference) together")
    save_every: int = option(50, "checkpoint every this many updates (it must divide --steps-per-round)")
    accumulation: int = option(1, "split each update's pairs into this many micro-batches (less memory)")

    def __post_init__(self):
        if not self.init.is_dir():
            raise ThinkdrawError(f"{self.init}: no such checkpoint folder")
        sizes = (self.rounds, self.prompts_per_round, self.steps_per_round, self.batch_size, self.sample_batch)
        if min(sizes) < 1:
            raise ThinkdrawError(
                "--rounds, --prompts-per-round, --steps-per-round, --batch-size, --sample-batch must be >= 1"
            )
        if self.candidates < 2:
            raise ThinkdrawError(f"--candidates {self.candidates}: a pair needs at least 2 samples to rank")
        if self.lr <= 0 or self.warmup < 0 or self.beta <= 0:
            raise ThinkdrawError("--lr and --beta must be positive and --warmup >= 0")
        if self.save_every < 1 or self.steps_per_round % self.save_every:
            raise ThinkdrawError(
                f"--save-every {self.save_every} must divide --steps-per-round {self.steps_per_round} "
                "(every round's end is saved)"
            )
        self.check_rollout_options(self.batch_size)

    @property
    def steps(self) -> int:
        """Optimizer updates of the whole run."""
        return self.rounds * self.steps_per_round


@dataclass
class ExportConfig:
    """Copy a trained checkpoint for shipping: weights in a smaller dtype, no optimizer state."""

    checkpoint: Path = option(help="a checkpoint folder (VQ or policy)", argument=True)
    out: Path = option(help="the folder to write", argument=True)
    dtype: str = option("float16", "float16, bfloat16 or float32")
    cfg_scale: float | None = option(None, "policies: the guidance scale generation uses by default with this model")
    plan_cfg_scale: float | None = option(None, "policies: the guidance scale after a plan with boxes")
    plan_temperature: float | None = option(
        None, "policies: the image-token temperature generation uses by default after a plan with boxes (0 = greedy)"
    )

    def __post_init__(self):
        if any(scale is not None and scale < 1 for scale in (self.cfg_scale, self.plan_cfg_scale)):
            raise ThinkdrawError("--cfg-scale and --plan-cfg-scale must be >= 1")
        if self.plan_temperature is not None and self.plan_temperature < 0:
            raise ThinkdrawError("--plan-temperature must be >= 0 (0 = greedy)")
        if self.dtype not in ("float16", "bfloat16", "float32"):
            raise ThinkdrawError(f"--dtype {self.dtype!r}: choose float16, bfloat16 or float32")
        if not (self.checkpoint / "thinkdraw.json").is_file():
            raise ThinkdrawError(f"{self.checkpoint}: not a thinkdraw checkpoint (no thinkdraw.json)")
        if self.out.resolve() == self.checkpoint.resolve():
            raise ThinkdrawError("OUT must differ from CHECKPOINT")


@dataclass
class GenerateConfig:
    """Generate images, thinking first (--think): one prompt to a picture, or a benchmark's prompts to a folder its
    evaluator reads (--outdir; GenEval's from --metadata, T2I-CompBench's and DPG-Bench's shipped)."""

    prompt: str | None = option(None, "the prompt (or use --metadata, --benchmark)", argument=True)
    metadata: Path | None = option(
        None,
        "the prompts to generate for into --outdir: a GenEval metadata JSONL; t2i-compbench: a prompt file, one a "
        "line (instead of --category); dpg: a folder of {item_id}.txt files, or one (instead of the shipped ones)",
    )
    outdir: Path | None = option(None, "output folder, in --benchmark's layout")
    benchmark: str = option(
        "geneval",
        "the folder's layout, as `thinkdraw eval BENCHMARK` reads it: geneval (the prompts of --metadata), "
        "t2i-compbench (of --category), dpg (the shipped prompts; each image a grid of the prompt's pictures)",
    )
    category: str = option("", f"--benchmark t2i-compbench: the shipped prompts of {', '.join(T2I_CATEGORIES)}")
    output: Path = option(Path("out.png"), "with a prompt: the picture to write", short="-o")
    n: int = option(4, "with a prompt: how many images", short="-n")
    images_per_prompt: int = option(
        4, "with --outdir: images per prompt (dpg: 1 to 4, one grid; score with `eval dpg --pic-num` as many)"
    )
    think: bool = option(True, "write a plan (or a rationale) before drawing")
    reasoning: str = option(
        "plan", "what thinking writes: plan (objects with boxes, GoT-R1) or rationale (ReasonGen-R1)"
    )
    plan: str | None = option(None, "with a prompt: draw after this plan instead of writing one (edit, redraw)")
    given_plans: bool = option(False, "with --metadata: draw each record after its 'plan' field")
    model: str = option("sft", "shipped world model (sft, grpo, base), a local checkpoint folder, or a hub id")
    sampling: SamplingSettings = nested(SamplingSettings)
    verifier: str = option("none", f"pick each image from -N candidates with a judge: none, {', '.join(VERIFIERS)}")
    verifying: VerifierSettings = nested(VerifierSettings)
    judge: str = option(
        "world-rules",
        "with --verifier: world-rules (GenEval's rules over the learned world detector), world (the tiny LLaVA "
        "judge), a folder, a hub id or a server url",
    )
    seed: int = option(0, "random seed")
    batch_size: int = option(16, "rows sampled together")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    dtype: str = option("auto", f"model dtype: {', '.join(DTYPES)} (auto: bfloat16 on a GPU, float32 on the CPU)")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise ThinkdrawError(f"unknown benchmark {self.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
        if self.benchmark == "t2i-compbench":
            if (self.category == "") == (self.metadata is None):
                raise ThinkdrawError(
                    "--benchmark t2i-compbench: give either --category C (its shipped prompts) or --metadata FILE "
                    "(not both)"
                )
            if self.category:
                check_category(self.category)
        else:
            reject_ignored(self, ("category",), "without --benchmark t2i-compbench")
        if self.benchmark == "geneval" and (self.prompt is None) == (self.metadata is None):
            raise ThinkdrawError("give either a prompt or --metadata FILE (not both)")
        if self.benchmark != "geneval" and self.prompt is not None:
            raise ThinkdrawError(f"--benchmark {self.benchmark} draws its prompts into --outdir: give no prompt")
        if self.prompt is None:
            source = "--metadata" if self.benchmark == "geneval" else f"--benchmark {self.benchmark}"
            if self.outdir is None:
                raise ThinkdrawError(f"{source} needs --outdir")
            reject_ignored(self, ("output", "n", "plan"), f"with {source} (use --outdir, --images-per-prompt)")
            if self.benchmark != "geneval":
                reject_ignored(self, ("given_plans",), f"with {source} (its prompt files hold no plans)")
        else:
            reject_ignored(self, ("outdir", "images_per_prompt", "given_plans"), "with a single prompt")
        if min(self.n, self.images_per_prompt, self.batch_size) < 1:
            raise ThinkdrawError("-n, --images-per-prompt and --batch-size must be at least 1")
        if self.benchmark == "dpg" and self.images_per_prompt > 4:
            raise ThinkdrawError(
                f"--images-per-prompt {self.images_per_prompt}: a DPG-Bench image is a grid of 1 to 4 pictures"
            )
        if self.plan is not None and not self.plan.strip():
            raise ThinkdrawError("--plan is empty")
        text = ("text_temperature", "text_top_k", "max_think_tokens")
        if self.reasoning not in REASONING:
            raise ThinkdrawError(f"--reasoning {self.reasoning!r}: choose one of {', '.join(REASONING)}")
        if not self.think:
            reject_ignored(self, ("plan", "given_plans", "reasoning"), "with --no-think (nothing is planned)")
            reject_ignored(self.sampling, text, "with --no-think (no plan is written)")
        elif self.plan is not None or self.given_plans:
            reject_ignored(self.sampling, text, "when the plan is given (no plan is written)")
            reject_ignored(self, ("reasoning",), "when the plan is given (a given plan is a plan)")
        if self.verifier not in ("none", *VERIFIERS):
            raise ThinkdrawError(f"--verifier {self.verifier!r}: choose none, {', '.join(VERIFIERS)}")
        if self.verifier == "none":
            reject_ignored(self, ("judge",), "without --verifier")
            knobs = ("candidates", "checks", "keep", "threshold", "potential", "rounds")
            reject_ignored(self.verifying, knobs, "without --verifier")
        else:
            reject_ignored(self, ("plan", "given_plans"), "with --verifier (each candidate writes its own plan)")
            if self.prompt is not None:
                reject_ignored(self, ("n",), "with --verifier (the grid shows the -N candidates, the pick marked)")
        if self.dtype not in DTYPES:
            raise ThinkdrawError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        check_runtime(self.device, self.threads)
