"""Memory at scale (issue 14): the peak memory of ONE GRPO update on a Janus-Pro-1B-shaped policy, LoRA, with
gradient checkpointing off and on, measured side by side in one run.

One group (`--group` rollouts of one prompt, CFG `--cfg-scale` as Janus-Pro samples, plans of exactly
`--max-think-tokens` tokens: a random model all but never samples [boi]) goes through
thinkdraw.trainers.grpo.train_grpo with a reward of random distinct scores (the group is kept), then one update:
teacher-forced log-probs (cond and uncond rows) -> grpo_loss -> backward -> clip -> AdamW step. Each setting runs
in a child process of its own (this script with --child), so the peaks do not mix; both load the same random
checkpoint, which the parent writes once.

What is measured, from the update's start (the first call of grpo.policy_loss: the model is loaded and the
rollouts are drawn and scored) to its end (the save that follows the optimizer step, which the child stops
before it writes anything):
    GPU  torch.cuda.max_memory_allocated, its peak stats reset at the start; "before" is memory_allocated then.
    CPU  peak RSS (resource.getrusage ru_maxrss), the kernel's high-water mark reset to the current RSS at the
         start (/proc/self/clear_refs) after returning freed heap (malloc_trim); "before" is the RSS then. Where
         the reset is refused, the peak is the whole child's (the output says so).
"rollout peak" is the high-water mark before the update (load, rollouts, scoring). The update's increase is
peak - before; its time is wall clock (CUDA synchronised). The weights, LoRA, gradient
and AdamW bytes are counted exactly from the model, not measured. Everything runs in float32 (train_grpo's dtype).

On a GPU the default shape is Janus-Pro-1B's language model (hidden 2048, 24 layers, 16 heads, MLP 5632); on
the CPU it is scaled down to fit ~16 GiB and a few minutes on 2 cores (hidden 512, 8 layers, head width 128 kept).
Either way the vocabularies (102400 text, 16384 image) and the sequence (576 image tokens after the plan) are
Janus-Pro's; the vision tower (never run by generation) and the VQ (only turns tokens into pixels) are small. The
tokenizer is a byte-level BPE with Janus-Pro's special tokens and chat template (tests/janus_pro_tiny.py), trained
on the reasoning instructions too, so the prompt's context has about the length a real tokenizer gives it.

    python benchmarks/grpo_memory.py                               # GPU if there is one, else the CPU config
    python benchmarks/grpo_memory.py --device cpu --out docs/bench/grpo_memory_cpu.json
    python benchmarks/grpo_memory.py --hidden 64 --layers 2 --image-tokens-side 4 --text-vocab 500 --threads 1
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from janus_pro_shape import JANUS_PRO_1B, add_shape_arguments, random_policy, resolve_shape
from transformers.utils import logging as hf_logging

PROMPT = "a photo of a red teddy bear and a blue cup"
MiB = 2**20


def save_random_policy(args, folder: Path) -> dict:
    """Write the random policy checkpoint; its parameter counts by part."""
    policy = random_policy(args, [PROMPT])
    policy.save(folder)
    model, tokenizer = policy.model, policy.tokenizer
    inner = model.model
    parts = {
        "language_model": inner.language_model,
        "lm_head": model.lm_head,
        "image_generation": [inner.generation_embeddings, inner.generation_aligner, inner.generation_head],
        "vision_tower": [inner.vision_model, inner.aligner],
        "vq": inner.vqmodel,
    }
    counts = {
        name: sum(p.numel() for m in (mods if isinstance(mods, list) else [mods]) for p in m.parameters())
        for name, mods in parts.items()
    }
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["tokenizer_tokens"] = len(tokenizer)
    return counts


# -- one measurement (the child process) --------------------------------------------------------------------------


class UpdateDone(Exception):
    """Raised at the save after the update: the measurement is taken, nothing is written."""


def rss_kib() -> int:
    """The current resident set size (VmRSS), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def reset_peak_rss() -> bool:
    """Return freed heap to the system, then set the kernel's RSS high-water mark to the current RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return peak_rss_kib() <= rss_kib() + 1024  # the reset took (ru_maxrss follows the mark on Linux >= 4.0)


def distinct_scores(samples):
    """Random scores, all different: the group always has signal."""
    from thinkdraw.rewards import Score

    order = random.Random(len(samples)).sample(range(len(samples)), len(samples))
    return [Score(i / max(1, len(samples) - 1), "random, distinct") for i in order]


def measure(args) -> dict:
    """One GRPO update from the checkpoint at args.init; the figures the module docstring names."""
    from thinkdraw.configs import TrainGRPOConfig
    from thinkdraw.trainers import grpo

    cuda = args.device.startswith("cuda")
    found: dict = {}
    policy_loss = grpo.policy_loss
    out = Path(tempfile.mkdtemp(prefix="grpo_memory_"))
    config = TrainGRPOConfig(
        init=Path(args.init),
        out=out,
        steps=1,
        prompts_per_batch=1,
        group_size=args.group,
        updates_per_batch=1,
        warmup=0,
        lora_rank=args.lora_rank,
        gradient_checkpointing=args.child == "on",
        cfg_scale=args.cfg_scale,
        max_think_tokens=args.max_think_tokens,
        save_every=10**9,
        device=args.device,
        threads=args.threads,
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def at_start(policy, micro, *rest, **kwargs):
        if "start" not in found:
            gc.collect()
            sync()
            contexts = [len(policy.encode(p, config.think, config.reasoning)) for p in micro.prompts]
            width = max(c + len(t) + 1 for c, t in zip(contexts, micro.plan_ids, strict=True))  # + boi
            found["sequence"] = {
                "rows": len(micro.prompts),
                "branches": 2 if config.cfg_scale != 1 else 1,
                "context_tokens": contexts[0],
                "plan_tokens": [min(map(len, micro.plan_ids)), max(map(len, micro.plan_ids))],
                "image_tokens": micro.image_ids.shape[1],
                "positions": width + micro.image_ids.shape[1] - 1,  # the last image token predicts nothing
            }
            found["trainable_params"] = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
            if cuda:
                found["rollout_peak_bytes"] = torch.cuda.max_memory_allocated()
                found["before_bytes"] = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            else:
                found["rollout_peak_bytes"] = peak_rss_kib() * 1024
                found["peak_reset"] = reset_peak_rss()
                found["before_bytes"] = rss_kib() * 1024
            found["start"] = time.perf_counter()
        return policy_loss(policy, micro, *rest, **kwargs)

    def at_end(*_, **__):
        sync()
        found["seconds"] = time.perf_counter() - found.pop("start")
        if cuda:
            found["peak_bytes"] = torch.cuda.max_memory_allocated()
            found["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            found["after_bytes"] = torch.cuda.memory_allocated()
        else:
            found["peak_bytes"] = peak_rss_kib() * 1024
            found["after_bytes"] = rss_kib() * 1024
        found["increase_bytes"] = found["peak_bytes"] - found["before_bytes"]
        raise UpdateDone

    grpo.policy_loss, grpo.model_to_save = at_start, at_end
    log: list[str] = []
    try:
        grpo.train_grpo(config, [{"prompt": PROMPT}], distinct_scores, echo=log.append)
    except UpdateDone:
        pass
    else:
        raise SystemExit("the run ended without reaching the save after its update")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    found["log"] = log
    return found


# -- the parent: both settings, side by side ----------------------------------------------------------------------


def child_run(args, init: Path, setting: str, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", setting, "--init", str(init)]
    command += ["--child-out", str(out), "--device", args.device, "--threads", str(args.threads)]
    command += ["--group", str(args.group), "--lora-rank", str(args.lora_rank), "--cfg-scale", str(args.cfg_scale)]
    command += ["--max-think-tokens", str(args.max_think_tokens)]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(parser)
    parser.add_argument("--group", type=int, default=8, help="rollouts of the one prompt (GRPO's group)")
    parser.add_argument("--lora-rank", type=int, default=32, help="GoT-R1's")
    parser.add_argument("--cfg-scale", type=float, default=5.0, help="Janus-Pro samples with 5")
    parser.add_argument("--max-think-tokens", type=int, default=64, help="the plan's length")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch in each child")
    parser.add_argument("--out", type=Path, default=Path("grpo_memory.json"), help="the JSON report to write")
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    if args.child:
        args.child_out.write_text(json.dumps(measure(args)))
        return

    scaled = resolve_shape(args)
    cuda = args.device.startswith("cuda")
    if cuda:
        where = f"{args.device} ({torch.cuda.get_device_name(args.device)}): torch.cuda.max_memory_allocated"
    else:
        why = "" if torch.cuda.is_available() else ", no CUDA GPU here"
        where = f"cpu ({args.threads} thread{'s' if args.threads != 1 else ''}{why}): peak RSS of the child process"
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "policy"
        counts = save_random_policy(args, init)
        gc.collect()
        rows = {s: child_run(args, init, s, Path(tmp) / f"{s}.json") for s in ("off", "on")}

    off, on = rows["off"], rows["on"]
    sequence = off["sequence"]
    trainable = off["trainable_params"]
    exact = {
        "weights_bytes": counts["total"] * 4,
        "lora_bytes": trainable * 4,
        "gradient_bytes": trainable * 4,
        "adamw_state_bytes": trainable * 8,  # exp_avg and exp_avg_sq, float32
    }
    tokens = sequence["rows"] * sequence["branches"] * sequence["positions"]
    ratio = {
        key: on[key] / off[key] if off[key] else float("nan") for key in ("peak_bytes", "increase_bytes", "seconds")
    }

    print(f"device: {where}")
    print(f"shape: Janus-Pro-1B{', scaled: ' + '; '.join(scaled) if scaled else ' (its language model as it is)'}")
    print(
        f"kept: image vocab {JANUS_PRO_1B['image_vocab']}, VQ embed dim {JANUS_PRO_1B['vq_embed_dim']}; small: vision "
        f"tower (1 layer x 32, never run here), VQ decoder ({2 * args.image_tokens_side}-pixel images); tokenizer "
        f"{counts['tokenizer_tokens']} tokens (the text vocab's other rows are sampled, never encoded)"
    )
    lm = counts["language_model"] + counts["lm_head"]
    print(
        f"params: {counts['total'] / 1e6:.1f}M ({lm / 1e6:.1f}M language model with head, "
        f"{counts['image_generation'] / 1e6:.1f}M image generation, {counts['vision_tower'] / 1e6:.2f}M vision, "
        f"{counts['vq'] / 1e6:.2f}M VQ); float32 weights {exact['weights_bytes'] / MiB:.0f} MiB"
    )
    print(
        f"LoRA rank {args.lora_rank}: {trainable / 1e6:.2f}M params, {exact['lora_bytes'] / MiB:.1f} MiB, "
        f"gradients {exact['gradient_bytes'] / MiB:.1f} MiB, AdamW state {exact['adamw_state_bytes'] / MiB:.1f} MiB"
    )
    print(
        f"update: {sequence['rows']} rollouts x {sequence['branches']} (CFG {args.cfg_scale:g}) = "
        f"{sequence['rows'] * sequence['branches']} sequences of {sequence['positions']} positions (context "
        f"{sequence['context_tokens']}, plan {sequence['plan_tokens'][1]}, boi, {sequence['image_tokens']} image "
        f"tokens): {tokens} token positions"
    )
    if not cuda and not (off["peak_reset"] and on["peak_reset"]):
        print("note: the RSS high-water mark could not be reset: the peaks are the whole child's, rollouts included")
    print(
        f"\n{'checkpointing':<14}{'peak MiB':>10}{'before MiB':>12}{'increase MiB':>14}"
        f"{'KiB/position':>14}{'update s':>10}{'rollout peak MiB':>18}"
    )
    for name, row in rows.items():
        print(
            f"{name:<14}{row['peak_bytes'] / MiB:>10.0f}{row['before_bytes'] / MiB:>12.0f}"
            f"{row['increase_bytes'] / MiB:>14.0f}{row['increase_bytes'] / 1024 / tokens:>14.1f}"
            f"{row['seconds']:>10.1f}{row['rollout_peak_bytes'] / MiB:>18.0f}"
        )
    print(
        f"{'on / off':<14}{ratio['peak_bytes']:>10.2f}{'':>12}{ratio['increase_bytes']:>14.2f}"
        f"{'':>14}{ratio['seconds']:>10.2f}"
    )

    report = {
        "device": args.device,
        "measure": "torch.cuda.max_memory_allocated" if cuda else "peak RSS (ru_maxrss, high-water mark reset)",
        "config": {
            key: getattr(args, key)
            for key in (
                "hidden",
                "layers",
                "heads",
                "intermediate",
                "text_vocab",
                "image_tokens_side",
                "group",
                "lora_rank",
                "cfg_scale",
                "max_think_tokens",
                "threads",
            )
        },
        "scaled": scaled,
        "janus_pro_1b": JANUS_PRO_1B,
        "params": counts,
        "exact_bytes": exact,
        "sequence": {**sequence, "token_positions": tokens},
        "rows": rows,
        "ratio_on_off": ratio,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
