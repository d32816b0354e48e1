"""Image tokens per second: our engine vs transformers' generate(generation_mode="image").

Same model, batch, CFG scale and sampling (temperature 1, no top-k). Two comparisons, each run interleaved
`--repeats` times so that machine noise hits them alike; prints each one's median and the ratios side by side:
- drawing directly: ours (KV cache) against transformers' image generate (and, on the world model, our engine
  without its cache, the reference it is tested against);
- thinking, then drawing: ours in one pass (the plan is sampled, then the image goes on from the same cache)
  against transformers' two calls (generate() for the plan, then generate(generation_mode="image") on prompt +
  plan, which encodes the whole text again, for both CFG branches). A random model all but never samples [boi],
  so every plan is exactly `--plan-tokens` long on both sides (timed with --janus-pro-1b only: the trained world
  model ends its plans where it likes).

The world model's image-position rows, which our engine adds to each image-token input, have no place in HF's
generate: it draws without them (one embedding add per step less work; the timings compare the same forward
otherwise).

`--janus-pro-1b` times a random policy of Janus-Pro-1B's shape (benchmarks/janus_pro_shape.py: its language
model, vocabularies and 576 image tokens; scaled down on a CPU, said so) in bfloat16 on a GPU. There it also
reports milliseconds per image step against the floor set by reading the weights that one decode step needs once
(the language model's layers and the image head) at the device's copy bandwidth, measured in the same run.

    python benchmarks/engine_speed.py                      # the shipped world model, or a fresh one
    python benchmarks/engine_speed.py --hidden 512 --layers 8 --batch 8
    python benchmarks/engine_speed.py --janus-pro-1b --batch 8 32 --out docs/bench/engine_speed_h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from janus_pro_shape import add_shape_arguments, random_policy, resolve_shape
from transformers import JanusVQVAE
from transformers.utils import logging as hf_logging

from thinkdraw.engine.sampling import SamplingSettings, generate
from thinkdraw.policy.model import Policy
from thinkdraw.world.model import new_world_policy, world_vq_config

SHIPPED = Path(__file__).resolve().parent.parent / "thinkdraw" / "assets" / "sft"
WORLD_PROMPT = "a photo of two red circles left of a blue square"
JANUS_PROMPT = "a photo of a red teddy bear and a blue cup"


def build(args) -> tuple[Policy, list[str]]:
    """The policy to time, on args.device, and what differs from the named shape."""
    if args.janus_pro_1b:
        scaled = resolve_shape(args)
        policy = random_policy(args, [JANUS_PROMPT])
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    elif args.hidden is None and SHIPPED.is_dir():
        policy, scaled, dtype = Policy.load(SHIPPED), [], torch.float32
    else:
        vq = JanusVQVAE(world_vq_config())
        policy, scaled = new_world_policy(vq, hidden=args.hidden or 192, layers=args.layers or 6), []
        dtype = torch.float32
    policy.model.to(device=args.device, dtype=dtype).eval()
    return policy, scaled


def copy_bandwidth(device: str) -> float:
    """Bytes per second a device-to-device copy moves, read and written counted (the median of 10)."""
    x = torch.empty(2**29, dtype=torch.float32, device=device)  # 2 GiB
    y = torch.empty_like(x)
    times = []
    for _ in range(12):
        torch.cuda.synchronize()
        start = time.perf_counter()
        y.copy_(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    del x, y
    return 2 * 2**31 / statistics.median(times[2:])


def step_bytes(policy: Policy) -> int:
    """Weight bytes one image decode step reads: the language model's layers and norm, the image head; the
    embedding tables are looked up by row, not read whole."""
    inner = policy.model.model
    lm = inner.language_model
    parts = [lm.layers, lm.norm, inner.generation_head]
    return sum(p.numel() * p.element_size() for m in parts for p in m.parameters())


def timed(ways: dict, repeats: int, sync) -> dict[str, list[float]]:
    """Seconds of each of ways {name: callable}: each warmed up once, then all run interleaved `repeats` times."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.no_grad():
        for way in ways.values():
            way()
        for _ in range(repeats):
            for name, way in ways.items():
                sync()
                start = time.perf_counter()
                way()
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def time_batch(policy: Policy, args, prompt: str, batch: int, sync, floor: float | None) -> dict:
    """The two comparisons at one batch size: the table printed, its figures returned."""
    model, n = policy.model, policy.num_image_tokens
    sampling = dict(do_sample=True, top_k=0, temperature=1.0)
    context = policy.encode(prompt, think=False)
    think_context = policy.encode(prompt, think=True)
    draw = SamplingSettings(cfg_scale=args.cfg)
    think = SamplingSettings(cfg_scale=args.cfg, max_think_tokens=args.plan_tokens, text_temperature=1.0)
    hf_ids = torch.tensor([context + [policy.special.boi]] * batch, device=args.device)
    hf_think_ids = torch.tensor([think_context] * batch, device=args.device)

    def generators():
        return [torch.Generator().manual_seed(i) for i in range(batch)]

    def ours(use_cache: bool, thinking: bool = False):
        contexts = [think_context if thinking else context] * batch
        settings = think if thinking else draw
        out = generate(model, contexts, policy.special, settings, generators(), thinking, n, use_cache=use_cache)
        if thinking and min(len(t) for t in out.think_ids) < args.plan_tokens:
            raise SystemExit("a plan ended early: the timings would not compare equal plans")

    def hf_image(ids):
        return model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_mode="image",
            guidance_scale=args.cfg,
            **sampling,
        )

    def hf_think_then_draw():
        plan = model.generate(
            input_ids=hf_think_ids,
            attention_mask=torch.ones_like(hf_think_ids),
            max_new_tokens=args.plan_tokens,
            min_new_tokens=args.plan_tokens,
            **sampling,
        )
        boi = torch.full_like(plan[:, :1], policy.special.boi)
        hf_image(torch.cat([plan, boi], 1))

    ways = {"ours (KV cache)": lambda: ours(True), "transformers generate": lambda: hf_image(hf_ids)}
    if args.janus_pro_1b:  # a random model writes plans of exactly --plan-tokens: both sides think alike
        ways["ours think + draw, one pass"] = lambda: ours(True, thinking=True)
        ways["transformers think + draw, two calls"] = hf_think_then_draw
    else:  # the trained world model ends its plans when it likes: no like-for-like think + draw
        ways["ours (no cache)"] = lambda: ours(False)
    times = timed(ways, args.repeats, sync)
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    print(f"\nbatch {batch}")
    row = {}
    for name, median in medians.items():
        base = medians["ours think + draw, one pass" if "think" in name else "ours (KV cache)"]
        rate = batch * n / median
        row[name] = {"seconds": median, "image_tokens_per_s": rate, "ours_speedup": median / base}
        print(f"{name:<38} {rate:9.1f} image tokens/s   ours is {median / base:5.2f}x as fast")
    if floor is not None:
        step_ms = medians["ours (KV cache)"] / n * 1e3
        row["ours_ms_per_image_step"], row["floor_ms_per_step"] = step_ms, floor * 1e3
        print(f"ours: {step_ms:.2f} ms per image step (prefill included); weight-read floor {floor * 1e3:.2f} ms")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--janus-pro-1b", action="store_true", help="a random policy of Janus-Pro-1B's shape")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (16; Janus-Pro: 8 32)")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--plan-tokens", type=int, default=64, help="the plan's length, think + draw")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    add_shape_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # generate()'s notes on max_length
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batches = args.batch or ([8, 32] if args.janus_pro_1b else [16])

    policy, scaled = build(args)
    model = policy.model
    n = policy.num_image_tokens
    prompt = JANUS_PROMPT if args.janus_pro_1b else WORLD_PROMPT
    model.generation_config.pad_token_id = policy.special.pad
    model.generation_config.bos_token_id = policy.special.bos
    model.generation_config.generation_kwargs = {"boi_token_id": policy.special.boi}
    params = sum(p.numel() for p in model.model.language_model.parameters()) / 1e6
    where = torch.cuda.get_device_name(args.device) if cuda else f"cpu, {args.threads} threads"
    shape = "Janus-Pro-1B shape" if args.janus_pro_1b else "world model"
    print(f"{shape}{' scaled: ' + '; '.join(scaled) if scaled else ''}; LM {params:.1f}M params, {model.dtype}")
    print(f"device: {where}; CFG {args.cfg}, {n} image tokens, plans of {args.plan_tokens} tokens")
    report = {"device": where, "shape": shape, "scaled": scaled, "lm_params_m": params, "dtype": str(model.dtype)}
    report.update(cfg=args.cfg, image_tokens=n, plan_tokens=args.plan_tokens, repeats=args.repeats, batches={})
    floor = None
    if cuda:
        bandwidth = copy_bandwidth(args.device)
        floor = step_bytes(policy) / bandwidth
        report.update(copy_bandwidth_gb_s=bandwidth / 1e9, weight_bytes_per_step=step_bytes(policy))
        print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s; one step reads {step_bytes(policy) / 1e9:.2f} GB of weights")

    for batch in batches:
        report["batches"][str(batch)] = time_batch(policy, args, prompt, batch, sync, floor)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
