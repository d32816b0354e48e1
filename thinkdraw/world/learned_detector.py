"""A learned detector for shapes-world images: the world's Mask2Former, trained here to read images as the exact
detector does, so that GenEval's rules over it make a world judge that never calls the exact detector.

The model is a small fully convolutional net (CenterNet's recipe, Zhou et al. 2019): at half resolution, one
heatmap per shape whose peaks are object centres, and at each centre the object's colour, size, sub-cell offset
and the exact detector's fit score (the rule engine's thresholds read it). Object boxes in the world are square,
so one size is the box.

Training data: images decoded from the policy's rollouts (their flaws are what the judge must read right) and
rendered scenes, half given one mistake, through the VQ; each also as a partial image at a random check step
(PARM's judge reads those), and each scene once more with a random share of its tokens swapped for another
scene's (blobs, broken shapes). Every image is labelled by the exact detector: its detections are the targets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from thinkdraw.evaluator.detection import Detection
from thinkdraw.world.detector import WorldDetector, as_array
from thinkdraw.world.spec import CANVAS, COLORS, MAX_SIZE, MIN_SIZE, SHAPES

STRIDE = 2  # output cells are STRIDE x STRIDE pixels
THRESHOLD = 0.3  # a heatmap peak above this is an object
SIGMA = 1.0  # the target heatmap's spread around a centre, in cells


class DetectorNetConfig(PretrainedConfig):
    model_type = "thinkdraw_world_detector"

    def __init__(self, width: int = 64, dilations: Sequence[int] = (1, 2, 4, 8, 4, 2, 1), **kwargs):
        self.width, self.dilations = width, list(dilations)
        self.shapes, self.colors = list(SHAPES), list(COLORS)
        super().__init__(**kwargs)


class DetectorNet(PreTrainedModel):
    """pixels [B, 3, 64, 64] in [-1, 1] -> maps [B, S + K + 4, 32, 32]: S shape heatmaps (logits), K colour
    logits, then size, offset x, offset y and fit score (logits)."""

    config_class = DetectorNetConfig
    main_input_name = "pixel_values"

    def __init__(self, config: DetectorNetConfig):
        super().__init__(config)
        w = config.width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, stride=STRIDE, padding=1)
        )
        self.blocks = nn.ModuleList(nn.Conv2d(w, w, 3, padding=d, dilation=d) for d in config.dilations)
        self.norms = nn.ModuleList(nn.GroupNorm(8, w) for _ in config.dilations)
        self.head = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, self.outputs, 1))
        self.post_init()

    @property
    def outputs(self) -> int:
        return len(self.config.shapes) + len(self.config.colors) + 4

    def _init_weights(self, module):
        if module is self.head[-1]:  # heatmaps start near "nothing here" (CenterNet's prior)
            with torch.no_grad():
                module.bias.zero_()
                module.bias[: len(self.config.shapes)] = -2.19

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(pixel_values))
        for conv, norm in zip(self.blocks, self.norms, strict=True):
            x = x + F.relu(norm(conv(x)))
        return self.head(x)


def _split(maps: torch.Tensor, shapes: int, colors: int):
    heat, color = maps[:, :shapes], maps[:, shapes : shapes + colors]
    size, offset, score = maps[:, shapes + colors], maps[:, shapes + colors + 1 : shapes + colors + 3], maps[:, -1]
    return heat, color, size, offset, score


def _size_target(s: float) -> float:
    return (s - (MIN_SIZE + MAX_SIZE) / 2) / ((MAX_SIZE - MIN_SIZE) / 2)


def _size_of(value: float) -> int:
    return int(np.clip(round(value * (MAX_SIZE - MIN_SIZE) / 2 + (MIN_SIZE + MAX_SIZE) / 2), MIN_SIZE, MAX_SIZE))


def decode(maps: torch.Tensor, config: DetectorNetConfig) -> list[list[Detection]]:
    """Each image's detections, most confident first: heatmap peaks (3 x 3 local maxima above THRESHOLD)."""
    heat, color, size, offset, score = _split(maps.float(), len(config.shapes), len(config.colors))
    peak, shape = torch.sigmoid(heat).max(dim=1)  # [B, h, w]
    keep = (peak > THRESHOLD) & (peak == F.max_pool2d(peak[:, None], 3, stride=1, padding=1)[:, 0])
    out: list[list[Detection]] = [[] for _ in range(maps.shape[0])]
    for b, i, j in keep.nonzero().tolist():
        s = _size_of(size[b, i, j].item())
        cx = (j + offset[b, 0, i, j].item()) * STRIDE
        cy = (i + offset[b, 1, i, j].item()) * STRIDE
        x0 = int(np.clip(round(cx - s / 2), 0, CANVAS - s))
        y0 = int(np.clip(round(cy - s / 2), 0, CANVAS - s))
        fit = round(torch.sigmoid(score[b, i, j]).item(), 4)
        name, hue = config.shapes[shape[b, i, j].item()], config.colors[color[b, :, i, j].argmax().item()]
        out[b].append(Detection(name, (x0, y0, x0 + s, y0 + s), fit, hue))
    return [sorted(found, key=lambda d: -d.score) for found in out]


def targets(detections: Sequence[Sequence[Detection]], config: DetectorNetConfig) -> dict[str, torch.Tensor]:
    """What the net should output for these images' detections: heatmaps (a Gaussian per centre on its shape's
    map, 1 at the centre cell), and at each centre cell the colour, size, offset and fit score."""
    B, cells = len(detections), CANVAS // STRIDE
    heat = torch.zeros(B, len(config.shapes), cells, cells)
    index = torch.zeros(B, cells, cells, dtype=torch.long)  # colour index at centre cells
    regress = torch.zeros(B, 4, cells, cells)  # size, offset x, offset y, score
    centre = torch.zeros(B, cells, cells, dtype=torch.bool)
    grid = torch.arange(cells, dtype=torch.float32)
    for b, found in enumerate(detections):
        for d in found:
            cx, cy = (d.box[0] + d.box[2]) / 2 / STRIDE, (d.box[1] + d.box[3]) / 2 / STRIDE
            i, j = min(int(cy), cells - 1), min(int(cx), cells - 1)
            bump = torch.exp(-((grid[None, :] - (j + 0.5)) ** 2 + (grid[:, None] - (i + 0.5)) ** 2) / (2 * SIGMA**2))
            k = config.shapes.index(d.label)
            heat[b, k] = torch.maximum(heat[b, k], bump)
            heat[b, k, i, j] = 1.0
            centre[b, i, j] = True
            index[b, i, j] = config.colors.index(d.color)
            regress[b, :, i, j] = torch.tensor([_size_target(d.box[2] - d.box[0]), cx - j, cy - i, d.score])
    return {"heat": heat, "color": index, "regress": regress, "centre": centre}


def detection_loss(maps: torch.Tensor, target: dict[str, torch.Tensor], config: DetectorNetConfig):
    """CenterNet's focal loss on the heatmaps, plus colour cross-entropy, size and offset L1 and the fit score's
    binary cross-entropy at the centre cells, each a mean per object. Returns (loss, metrics)."""
    heat, color, size, offset, score = _split(maps, len(config.shapes), len(config.colors))
    p = torch.sigmoid(heat).clamp(1e-4, 1 - 1e-4)
    y = target["heat"]
    positive = y.eq(1).float()
    focal = -(positive * (1 - p) ** 2 * torch.log(p) + (1 - positive) * (1 - y) ** 4 * p**2 * torch.log(1 - p)).sum()
    at = target["centre"]
    objects = max(int(at.sum()), 1)
    regress = target["regress"]
    color_ce = F.cross_entropy(color.permute(0, 2, 3, 1)[at], target["color"][at], reduction="sum")
    size_l1 = (size - regress[:, 0]).abs()[at].sum()
    offset_l1 = (offset - regress[:, 1:3]).abs().sum(dim=1)[at].sum()
    score_bce = F.binary_cross_entropy_with_logits(score[at], regress[:, 3][at], reduction="sum")
    parts = {"focal": focal, "color": color_ce, "size": size_l1, "offset": offset_l1, "fit": score_bce}
    loss = sum(parts.values()) / objects
    return loss, {name: value.item() / objects for name, value in parts.items()}


def pixels_of(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, 64, 64, 3] -> float [B, 3, 64, 64] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class LearnedWorldDetector:
    """The Detector protocol over a trained DetectorNet (thinkdraw.evaluator.detection)."""

    classes = SHAPES

    def __init__(self, net: DetectorNet):
        self.net = net.eval()

    @classmethod
    def load(cls, source: str | Path, device: str = "cpu") -> LearnedWorldDetector:
        from thinkdraw.checkpoint import load_model

        return cls(load_model(DetectorNet, source).float().to(device))

    @torch.no_grad()
    def detect_many(self, images: Sequence[Image.Image | np.ndarray]) -> list[list[Detection]]:
        arrays = np.stack([as_array(image) for image in images]).astype(np.uint8)
        maps = self.net(pixels_of(arrays).to(self.net.device))
        return decode(maps, self.net.config)

    def detect(self, image: Image.Image | np.ndarray) -> list[Detection]:
        return self.detect_many([image])[0]

    def colors(self, image: Image.Image, detections: list[Detection]) -> list[str]:
        return [d.color for d in detections]


def mixed_tokens(tokens: torch.Tensor, rng: random.Random, most: float = 0.3) -> torch.Tensor:
    """Each row with a random share (up to `most`) of its tokens taken from another row at the same places."""
    mixed = tokens.clone()
    B, N = tokens.shape
    for b in range(B):
        other = rng.randrange(B)
        places = torch.tensor(rng.sample(range(N), int(rng.uniform(0.05, most) * N)), dtype=torch.long)
        mixed[b, places] = tokens[other, places]
    return mixed


def labelled_images(policy, drawn: Sequence, rng: random.Random, mix: bool, checks: Sequence[int], batch: int = 64):
    """The images of `drawn` (thinkdraw.world.judge_data.Drawn): each finished, at a random check step and, with
    `mix`, with some tokens swapped; as uint8 [M, 64, 64, 3] with the exact detector's detections."""
    detector = WorldDetector()
    images, labels = [], []
    for start in range(0, len(drawn), batch):
        tokens = torch.stack([d.tokens for d in drawn[start : start + batch]])
        decoded = policy.decode(tokens)
        decoded += [policy.decode_partial(tokens[i : i + 1], rng.choice(checks))[0] for i in range(len(tokens))]
        if mix:
            decoded += policy.decode(mixed_tokens(tokens, rng))
        for image in decoded:
            array = as_array(image).astype(np.uint8)
            images.append(array)
            labels.append(detector.detect(array))
    return np.stack(images), labels


def _save_data(path: Path, images: np.ndarray, labels: list[list[Detection]]) -> None:
    rows = [[[d.label, list(d.box), d.score, d.color] for d in found] for found in labels]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, images=images, labels=np.array(json.dumps(rows)))
    tmp.rename(path)


def _load_data(path: Path) -> tuple[np.ndarray, list[list[Detection]]]:
    data = np.load(path)
    rows = json.loads(str(data["labels"]))
    return data["images"], [[Detection(n, tuple(b), s, c) for n, b, s, c in found] for found in rows]


def detector_data(config, echo=print) -> tuple[np.ndarray, list[list[Detection]]]:
    """The labelled images of config's rollouts and rendered scenes, made once and kept in OUT/data.npz (a
    resumed run reads them back)."""
    from thinkdraw.policy.model import Policy
    from thinkdraw.verifiers.verify import check_steps
    from thinkdraw.world.judge_data import CHECKS, read_rollouts, rendered_scenes
    from thinkdraw.world.registry import SHIPPED_MODELS
    from thinkdraw.world.splits import load_split

    path = config.out / "data.npz"
    if path.is_file():
        return _load_data(path)
    rng = random.Random(config.seed)
    policy = Policy.load(SHIPPED_MODELS.get(config.model, config.model))
    checks = check_steps(policy.num_image_tokens, CHECKS)
    rollouts = [d for folder in config.rollouts for d in read_rollouts(folder)]
    records = load_split("train")
    scenes = rendered_scenes(policy, [rng.choice(records) for _ in range(config.scenes)], rng) if config.scenes else []
    echo(f"labelling the images of {len(rollouts)} rollouts and {len(scenes)} scenes")
    images, labels = labelled_images(policy, rollouts, rng, mix=False, checks=checks) if rollouts else (None, [])
    if scenes:
        more, more_labels = labelled_images(policy, scenes, rng, mix=True, checks=checks)
        images = more if images is None else np.concatenate([images, more])
        labels += more_labels
    config.out.mkdir(parents=True, exist_ok=True)
    _save_data(path, images, labels)
    echo(f"{len(labels)} images, {sum(map(len, labels))} objects")
    return images, labels


def train_world_detector(config, echo=print) -> LearnedWorldDetector:
    """`thinkdraw train detector`: a new DetectorNet (or the one in OUT, resumed) on detector_data; the shared
    step loop, each step's batch drawn by a generator seeded by (seed, step)."""
    from thinkdraw.checkpoint import load_model, load_trainer_state, read_meta, save_checkpoint
    from thinkdraw.runtime import Runtime
    from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
    from thinkdraw.trainers.losses import micro_batches

    runtime = Runtime.create(config.device, "float32", config.threads)
    images, labels = detector_data(config, echo)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        net, first = load_model(DetectorNet, checkpoint), read_meta(checkpoint)["step"]
    else:
        net, first = DetectorNet(DetectorNetConfig(width=config.width)), 0
    net.to(runtime.device).train()
    params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    accelerator, model, optimizer = accelerated(net, optimizer, runtime)
    log = RunLog(config.out, echo, config.max_minutes)
    slices = micro_batches(config.batch_size, config.accumulation)

    def save(step: int) -> None:
        save_checkpoint(checkpoint, accelerator.unwrap_model(model), run_meta("detector", step, config), optimizer)

    def loss_fn(step: int, micro: int) -> tuple[torch.Tensor, dict]:
        rng = random.Random(f"{config.seed}:{step}")
        rows = [rng.randrange(len(labels)) for _ in range(config.batch_size)][slices[micro]]
        maps = model(pixels_of(images[rows]).to(accelerator.device))
        target = {k: v.to(accelerator.device) for k, v in targets([labels[r] for r in rows], net.config).items()}
        loss, metrics = detection_loss(maps, target, net.config)
        share = len(rows) / config.batch_size
        return loss * share, {k: v * share for k, v in {"loss": loss.item(), **metrics}.items()}

    run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=50)
    return LearnedWorldDetector(accelerator.unwrap_model(model))
