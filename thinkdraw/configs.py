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
from thinkdraw.plan import REASONING
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


@dataclass
class TrainVQConfig:
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
    save_every: int = option(500, "checkpoint every this many steps")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes; 0: no limit")
    accumulation: int = option(1, "split each step's batch into this many micro-batches (less memory)")
    clip: float = option(1.0, "clip the gradient norm to this (0: no clip)")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")
    seed: int = option(0, "random seed (data and initialisation)")
    resume: bool = option(False, "continue from OUT/checkpoint")

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
class TrainPolicyConfig:
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
    save_every: int = option(500, "checkpoint every this many steps")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes; 0: no limit")
    accumulation: int = option(1, "split each step's batch into this many micro-batches (same update, less memory)")
    clip: float = option(1.0, "clip the gradient norm to this (0: no clip)")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")
    seed: int = option(0, "random seed")
    resume: bool = option(False, "continue from OUT/checkpoint")

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
class TrainJudgeConfig:
    """Train a world judge (a tiny LLaVA) on the policy's rollouts and spoilt scenes, labelled by the detector."""

    rollouts: list[Path] = option([], "rollout folders (`thinkdraw world rollouts`) to learn from")
    scenes: int = option(2000, "rendered scenes added (half given one mistake), through the policy's VQ")
    model: str = option("sft", "the policy whose VQ makes the scenes' images and partial images (sft, base, a path)")
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
    save_every: int = option(500, "checkpoint every this many steps")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes; 0: no limit")
    accumulation: int = option(1, "split each step's batch into this many micro-batches (same update, less memory)")
    clip: float = option(1.0, "clip the gradient norm to this (0: no clip)")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")
    seed: int = option(0, "random seed (data and initialisation)")
    resume: bool = option(False, "continue from OUT/checkpoint")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ThinkdrawError("--steps and --batch-size must be at least 1")
        for folder in self.rollouts:
            if not folder.is_dir():
                raise ThinkdrawError(f"--rollouts {folder}: no such folder")
        if not self.rollouts and self.scenes < 1:
            raise ThinkdrawError("nothing to learn from: give --rollouts folders or --scenes N")
        if 64 % self.patch:
            raise ThinkdrawError(f"--patch {self.patch} must divide the 64-pixel image")
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


@dataclass
class ExportConfig:
    """Copy a trained checkpoint for shipping: weights in a smaller dtype, no optimizer state."""

    checkpoint: Path = option(help="a checkpoint folder (VQ or policy)", argument=True)
    out: Path = option(help="the folder to write", argument=True)
    dtype: str = option("float16", "float16, bfloat16 or float32")
    cfg_scale: float | None = option(None, "policies: the guidance scale generation uses by default with this model")

    def __post_init__(self):
        if self.cfg_scale is not None and self.cfg_scale < 1:
            raise ThinkdrawError("--cfg-scale must be >= 1")
        if self.dtype not in ("float16", "bfloat16", "float32"):
            raise ThinkdrawError(f"--dtype {self.dtype!r}: choose float16, bfloat16 or float32")
        if not (self.checkpoint / "thinkdraw.json").is_file():
            raise ThinkdrawError(f"{self.checkpoint}: not a thinkdraw checkpoint (no thinkdraw.json)")
        if self.out.resolve() == self.checkpoint.resolve():
            raise ThinkdrawError("OUT must differ from CHECKPOINT")


@dataclass
class GenerateConfig:
    """Generate images, thinking first (--think): one prompt to a picture, or a metadata file to a GenEval folder."""

    prompt: str | None = option(None, "the prompt (or use --metadata)", argument=True)
    metadata: Path | None = option(None, "a GenEval metadata JSONL: generate for every line into --outdir")
    outdir: Path | None = option(None, "with --metadata: output folder in GenEval's layout")
    output: Path = option(Path("out.png"), "with a prompt: the picture to write", short="-o")
    n: int = option(4, "with a prompt: how many images", short="-n")
    images_per_prompt: int = option(4, "with --metadata: images per prompt")
    think: bool = option(True, "write a plan (or a rationale) before drawing")
    reasoning: str = option(
        "plan", "what thinking writes: plan (objects with boxes, GoT-R1) or rationale (ReasonGen-R1)"
    )
    plan: str | None = option(None, "with a prompt: draw after this plan instead of writing one (edit, redraw)")
    given_plans: bool = option(False, "with --metadata: draw each record after its 'plan' field")
    model: str = option("sft", "shipped world model (sft, base), a local checkpoint folder, or a hub id")
    sampling: SamplingSettings = nested(SamplingSettings)
    verifier: str = option("none", f"pick each image from -N candidates with a judge: none, {', '.join(VERIFIERS)}")
    verifying: VerifierSettings = nested(VerifierSettings)
    judge: str = option("world", "with --verifier: world (the shipped world judge), a folder, a hub id or a server url")
    seed: int = option(0, "random seed")
    batch_size: int = option(16, "rows sampled together")
    device: str = option("auto", "auto (a GPU when there is one), cpu, cuda or cuda:N")
    dtype: str = option("auto", f"model dtype: {', '.join(DTYPES)} (auto: bfloat16 on a GPU, float32 on the CPU)")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")

    def __post_init__(self):
        if (self.prompt is None) == (self.metadata is None):
            raise ThinkdrawError("give either a prompt or --metadata FILE (not both)")
        if self.metadata is not None:
            if self.outdir is None:
                raise ThinkdrawError("--metadata needs --outdir")
            reject_ignored(self, ("output", "n", "plan"), "with --metadata (use --outdir, --images-per-prompt)")
        else:
            reject_ignored(self, ("outdir", "images_per_prompt", "given_plans"), "with a single prompt")
        if min(self.n, self.images_per_prompt, self.batch_size) < 1:
            raise ThinkdrawError("-n, --images-per-prompt and --batch-size must be at least 1")
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
            reject_ignored(
                self.verifying, ("candidates", "checks", "keep", "threshold", "rounds"), "without --verifier"
            )
        else:
            reject_ignored(self, ("plan", "given_plans"), "with --verifier (each candidate writes its own plan)")
            if self.prompt is not None:
                reject_ignored(self, ("n",), "with --verifier (the grid shows the -N candidates, the pick marked)")
        if self.dtype not in DTYPES:
            raise ThinkdrawError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        check_runtime(self.device, self.threads)
