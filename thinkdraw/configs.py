"""Config dataclasses of the commands that load models (one per command; the CLI is built from them).

They import nothing heavy, so `thinkdraw --help` and the world and eval commands start fast;
the code that runs them (trainers, policy) imports torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thinkdraw.cli.config import option
from thinkdraw.errors import ThinkdrawError

STAGES = ("base", "sft")


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
    threads: int = option(2, "CPU threads for torch")
    seed: int = option(0, "random seed (data and initialisation)")
    resume: bool = option(False, "continue from OUT/checkpoint")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ThinkdrawError("--steps and --batch-size must be at least 1")
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
    bf16: bool = option(True, "forward under bfloat16 autocast (weights, optimizer and loss stay float32)")
    hidden: int = option(192, "base: LM width")
    layers: int = option(6, "base: LM layers")
    save_every: int = option(500, "checkpoint every this many steps")
    max_minutes: float = option(0.0, "stop (and save) after this many minutes; 0: no limit")
    threads: int = option(2, "CPU threads for torch")
    seed: int = option(0, "random seed")
    resume: bool = option(False, "continue from OUT/checkpoint")

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ThinkdrawError(f"unknown stage {self.stage!r}; choose base or sft")
        if not self.init.is_dir():
            raise ThinkdrawError(f"{self.init}: no such checkpoint folder")
        for name in ("drop_rate", "think_rate", "error_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ThinkdrawError(f"--{name.replace('_', '-')} must be between 0 and 1")
        check_resume(self.resume, self.out)


@dataclass
class ExportConfig:
    """Copy a trained checkpoint for shipping: weights in a smaller dtype, no optimizer state."""

    checkpoint: Path = option(help="a checkpoint folder (VQ or policy)", argument=True)
    out: Path = option(help="the folder to write", argument=True)
    dtype: str = option("float16", "float16, bfloat16 or float32")

    def __post_init__(self):
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
    think: bool = option(True, "write a plan before drawing")
    model: str = option("sft", "shipped world model (sft, base), a local checkpoint folder, or a hub id")
    cfg_scale: float = option(5.0, "classifier-free guidance scale (1 = off)")
    temperature: float = option(1.0, "image-token temperature")
    top_k: int = option(0, "image-token top-k (0 = off)")
    text_temperature: float = option(1.0, "plan-token temperature (0 = greedy)")
    seed: int = option(0, "random seed")
    batch_size: int = option(16, "rows sampled together")
    threads: int = option(2, "CPU threads for torch")

    def __post_init__(self):
        if (self.prompt is None) == (self.metadata is None):
            raise ThinkdrawError("give either a prompt or --metadata FILE (not both)")
        if self.metadata is not None and self.outdir is None:
            raise ThinkdrawError("--metadata needs --outdir")
        if self.cfg_scale < 1 or min(self.temperature, self.text_temperature, self.top_k) < 0:
            raise ThinkdrawError("--cfg-scale must be >= 1, --temperature and --text-temperature >= 0, --top-k >= 0")
        if min(self.n, self.images_per_prompt, self.batch_size) < 1:
            raise ThinkdrawError("-n, --images-per-prompt and --batch-size must be at least 1")

    def settings(self):
        from thinkdraw.engine.sampling import SamplingSettings

        return SamplingSettings(
            cfg_scale=self.cfg_scale,
            temperature=self.temperature,
            top_k=self.top_k,
            text_temperature=self.text_temperature,
        )
