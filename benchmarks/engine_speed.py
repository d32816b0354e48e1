"""Image tokens per second: our engine vs transformers' generate(generation_mode="image").

Same model, batch, CFG scale and sampling (temperature 1, no top-k), drawing directly
(HF's image generate cannot think first). The world model's image-position rows, which our engine
adds to each image-token input, have no place in HF's generate: it draws without them (one
embedding add per step less work; the timings compare the same forward otherwise). Three ways,
run interleaved `--repeats` times so that machine noise hits them alike; prints each one's median
and the ratios side by side.

    python benchmarks/engine_speed.py                      # the shipped world model, or a fresh one
    python benchmarks/engine_speed.py --hidden 512 --layers 8 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import JanusVQVAE

from thinkdraw.engine.sampling import SamplingSettings, generate
from thinkdraw.policy.model import Policy
from thinkdraw.world.model import new_world_policy, world_vq_config

SHIPPED = Path(__file__).resolve().parent.parent / "thinkdraw" / "assets" / "sft"
PROMPT = "a photo of two red circles left of a blue square"


def build(args) -> Policy:
    if args.hidden is None and SHIPPED.is_dir():
        return Policy.load(SHIPPED)
    return new_world_policy(JanusVQVAE(world_vq_config()), hidden=args.hidden or 192, layers=args.layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=None, help="a fresh random model of this width")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    policy = build(args)
    model = policy.model.eval()
    n = policy.num_image_tokens
    contexts = [policy.encode(PROMPT, think=False)] * args.batch
    settings = SamplingSettings(cfg_scale=args.cfg)
    model.generation_config.pad_token_id = policy.special.pad
    model.generation_config.bos_token_id = policy.special.bos
    model.generation_config.generation_kwargs = {"boi_token_id": policy.special.boi}
    hf_ids = torch.tensor([c + [policy.special.boi] for c in contexts])

    def ours(use_cache: bool):
        generators = [torch.Generator().manual_seed(i) for i in range(args.batch)]
        generate(
            model, contexts, policy.special, settings, generators, think=False, num_image_tokens=n, use_cache=use_cache
        )

    def hf():
        model.generate(
            input_ids=hf_ids,
            attention_mask=torch.ones_like(hf_ids),
            generation_mode="image",
            do_sample=True,
            guidance_scale=args.cfg,
            top_k=0,
            temperature=1.0,
        )

    ways = {"ours (KV cache)": lambda: ours(True), "transformers generate": hf, "ours (no cache)": lambda: ours(False)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.no_grad():
        for fn in ways.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in ways.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.model.language_model.parameters()) / 1e6
    print(f"LM {params:.2f}M params, batch {args.batch}, CFG {args.cfg}, {n} image tokens, {args.threads} threads")
    base = statistics.median(times["ours (KV cache)"])
    for name, samples in times.items():
        median = statistics.median(samples)
        rate = args.batch * n / median
        print(f"{name:<24} {rate:9.1f} image tokens/s   ours (KV cache) is {median / base:5.2f}x as fast")


if __name__ == "__main__":
    main()
