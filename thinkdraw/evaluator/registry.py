"""The evaluator's own detectors by name (the shapes world lists its exact detector in thinkdraw.world.registry).

Nothing heavy is imported here, so the CLI lists them and shows their defaults without loading torch; a
detector's module is imported when one is built.
"""

from __future__ import annotations

DETECTORS = ("mask2former",)  # thinkdraw.evaluator.mask2former: GenEval's detector on transformers

# The hub checkpoints a user with the weights would name (a local folder saved from them works the same):
MASK2FORMER_MODEL = "facebook/mask2former-swin-small-coco-instance"  # Mask2Former Swin-S, COCO instance, 100 queries
CLIP_MODEL = "openai/clip-vit-large-patch14"  # the weights open_clip loads as ViT-L-14 / "openai"
# T2I-CompBench's models on the hub (the official code loads BLIP's model_base_vqa_capfilt_large.pth and OpenAI's
# ViT-B/32 through the clip package):
BLIP_VQA_MODEL = "Salesforce/blip-vqa-capfilt-large"  # BLIP ViT-B VQA, CapFilt-L
CLIP_SIMILARITY_MODEL = "openai/clip-vit-base-patch32"  # CLIP ViT-B/32
