"""How predictable a VQ's image tokens are, and how well its round trip reads: VQ checkpoints side by side.

For each VQ it encodes the same seeded random scenes (1-8 objects) and reports:
- the entropy of the token distribution (nats) and the number of codes used;
- for patches of open background, the entropy of their token given their position, over all
  such patches and over those with no object within 3 patches (12 px) in any direction: 0 means
  the background is always the same token there, whatever else the scene holds;
- the share of distinct pixel patches that always get one token (a token a function of its patch);
- the round trip (encode -> decode -> exact detector): objects read right, boxes exact.

    python benchmarks/vq_tokens.py thinkdraw/assets/vq runs/vq/checkpoint --scenes 500
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter, defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from transformers import JanusVQVAE

from thinkdraw.checkpoint import load_model
from thinkdraw.policy.vq import encode_pixels, patchify, to_pixels
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render
from thinkdraw.world.train_vq import roundtrip_accuracy


def entropy(values) -> float:
    counts = Counter(values)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def conditional_entropy(tokens: np.ndarray, keep: np.ndarray) -> float:
    """H(token | position) over the kept entries of tokens [S, P]."""
    total = keep.sum()
    return sum(keep[:, p].sum() / total * entropy(tokens[keep[:, p], p].tolist()) for p in range(tokens.shape[1]))


def token_stats(vq: JanusVQVAE, images: np.ndarray) -> dict:
    n = vq.config.num_patches
    pixels = to_pixels(images)
    tokens = torch.cat([encode_pixels(vq, pixels[i : i + 100]) for i in range(0, len(pixels), 100)]).numpy()
    patches = patchify(pixels, n).flatten(1)  # [S*n*n, 3*p*p]
    empty = patchify(to_pixels(render([])[None]), n)[0].flatten()  # a patch of the empty canvas
    background = (patches == empty).all(1).view(len(images), 1, n, n)
    near_object = F.max_pool2d((~background).float(), kernel_size=7, stride=1, padding=3) > 0
    far = (background & ~near_object).view(len(images), -1).numpy()
    background = background.view(len(images), -1).numpy()
    patches = patches.numpy()
    by_patch = defaultdict(set)
    for key, token in zip(map(bytes, patches), tokens.reshape(-1), strict=True):
        by_patch[key].add(int(token))
    return {
        "entropy": entropy(tokens.reshape(-1).tolist()),
        "codes": len(np.unique(tokens)),
        "bg_given_pos": conditional_entropy(tokens, background),
        "far_bg_given_pos": conditional_entropy(tokens, far),
        "one_token_patches": sum(len(t) == 1 for t in by_patch.values()) / len(by_patch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="VQ checkpoint folders")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(7)
    images = np.stack([render(random_layout(rng, rng.randint(1, 8))) for _ in range(args.scenes)])
    columns = ("H(tok)", "codes", "H(bg|pos)", "H(far bg|pos)", "1-token", "objects", "boxes")
    print(f"{'VQ':40} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, (7, 6, 9, 13, 8, 8, 7), strict=True)))
    for path in args.checkpoints:
        vq = load_model(JanusVQVAE, path).eval()
        s = token_stats(vq, images)
        rt = roundtrip_accuracy(vq, scenes=args.scenes)
        print(
            f"{path:40} {s['entropy']:7.3f} {s['codes']:6d} {s['bg_given_pos']:9.3f} {s['far_bg_given_pos']:13.3f} "
            f"{s['one_token_patches']:8.2%} {rt['objects_right']:8.2%} {rt['boxes_exact']:7.2%}"
        )


if __name__ == "__main__":
    main()
