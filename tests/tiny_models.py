"""Tiny world models shared by the policy, checkpoint, trainer and CLI tests (built in well under a second)."""

from __future__ import annotations

import torch
from transformers import JanusVQVAE, JanusVQVAEConfig

from thinkdraw.policy.model import Policy
from thinkdraw.world.model import init_codebook, new_world_policy, world_vq_config

TINY_CODEBOOK = 64


def tiny_vq_config() -> JanusVQVAEConfig:
    """The world VQ (8x8 tokens for 64x64 images) with 64 codes, narrower than the world VQ."""
    config = world_vq_config(codebook=TINY_CODEBOOK, grid=8)
    config.channel_multiplier = [1, 1, 2, 2]
    return config


def tiny_vq(seed: int = 0) -> JanusVQVAE:
    torch.manual_seed(seed)
    vq = JanusVQVAE(tiny_vq_config()).eval()
    init_codebook(vq, scenes=8, seed=seed)
    return vq


def tiny_policy(seed: int = 0) -> Policy:
    """An untrained world policy: Llama 2 x 64 around the tiny VQ, the real world tokenizer."""
    policy = new_world_policy(tiny_vq(seed), hidden=64, layers=2, seed=seed)
    policy.model.eval()
    return policy
