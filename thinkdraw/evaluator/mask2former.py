"""GenEval's detector on transformers: Mask2Former (COCO instance segmentation) finds objects, CLIP names colours.

    detector = Mask2FormerDetector.load()                      # the hub ids in thinkdraw.evaluator.registry
    verdict = judge_image(metadata, image, detector)           # thinkdraw.evaluator.rules, the official rules

It plays the role of the official scorer's mmdet model (djghosh13/geneval, evaluation/evaluate_images.py) and
hands the rule engine what mmdet handed the official rules, nothing cut before them:
- detect(): the image resized to mmdet's test scale (short side 800, long side at most 1333); the mask logits
  upsampled as mmdet's MaskFormerFusionHead does (bilinear to the input, padding cropped, bilinear to the
  image) and binarised at 0; the 100 best (query, class) pairs by class probability (mmdet's max_per_image, so a
  query can stand for two classes), each scored class probability x mean mask probability inside its mask, its
  box the mask's extent (mmdet's mask2bbox). No score threshold, no NMS: the rules apply `score > 0.3` (0.9 on
  counting) and 16 per class, as the official code does on mmdet's output.
- colors(): per detection, the image composited over #999 grey outside its mask and cropped to its box
  (the official ImageCrops), then CLIP zero-shot over GenEval's ten colours with its three templates, each text
  embedding normalised, averaged over the templates and normalised again (clip_benchmark's classifier).
transformers' own post_process_instance_segmentation is not used: it resamples every mask to 384x384 before
binarising, whatever the image size, and rounds scores to 6 decimals. Every known difference from the official
scorer is listed in docs/geneval_differences.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from thinkdraw.errors import DetectorError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.geneval import geneval_classes
from thinkdraw.evaluator.registry import CLIP_MODEL, MASK2FORMER_MODEL
from thinkdraw.evaluator.rules import COLOR_NAMES

TEST_SCALE = (800, 1333)  # mmdet's test pipeline: Resize(img_scale=(1333, 800), keep_ratio=True)
MAX_PER_IMAGE = 100  # mmdet's test_cfg.max_per_image: (query, class) pairs kept per image
BACKGROUND = (153, 153, 153)  # the official crops' bgcolor "#999"
COLOR_TEMPLATES = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}", "a photo of a {c} object")
CLIP_BATCH = 16  # the official DataLoader's batch_size
# COCO's names for the three classes GenEval renames; the rest are spelled as in object_names.txt
COCO_NAMES = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}


# -- detection ------------------------------------------------------------------------------------------------


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet's mask2bbox: [N, H, W] bool -> [N, 4] (x0, y0, x1 + 1, y1 + 1) over the set pixels; zeros if none."""
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    x_any = masks.any(dim=1)  # [N, W]
    y_any = masks.any(dim=2)  # [N, H]
    for i in range(masks.shape[0]):
        x = torch.where(x_any[i])[0]
        y = torch.where(y_any[i])[0]
        if len(x) and len(y):
            boxes[i] = torch.stack([x[0], y[0], x[-1] + 1, y[-1] + 1]).float()
    return boxes


def instance_results(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    image_size: tuple[int, int],
    max_per_image: int = MAX_PER_IMAGE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's instances as mmdet 2.x computes them (Mask2FormerHead.simple_test, then
    MaskFormerFusionHead.simple_test with rescale=True and instance_postprocess).

    class_logits [Q, C + 1] (the last class is "no object"), mask_logits [Q, h, w] (a quarter of the input's
    resolution); input_size is the model input's (height, width), valid_size the part of it that holds the
    resized image (the rest is padding), image_size the original image's. Returns labels [K], query indices [K],
    scores [K] and masks [Q, H, W] (bool, per query: index them with the query indices), K = min(max_per_image,
    Q * C), most probable class first.
    """
    Q, C = class_logits.shape[0], class_logits.shape[1] - 1
    logits = F.interpolate(mask_logits[None], size=input_size, mode="bilinear", align_corners=False)
    logits = logits[:, :, : valid_size[0], : valid_size[1]]  # [1, Q, h_valid, w_valid]: padding removed
    logits = F.interpolate(logits, size=image_size, mode="bilinear", align_corners=False)[0]  # [Q, H, W]
    probs = class_logits.softmax(dim=-1)[:, :-1]  # [Q, C]
    top_probs, top = probs.flatten().topk(min(max_per_image, Q * C))  # [K]
    labels, queries = top % C, top // C
    masks = logits > 0  # [Q, H, W]
    # mean mask probability inside the binary mask; the score and the mask depend on the query only
    mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)  # [Q]
    return labels, queries, top_probs * mask_scores[queries], masks


def check_labels(id2label: dict[int, str], names: Sequence[str]) -> None:
    """A detector fits GenEval when its labels are COCO's 80 things in COCO's order (the official scorer maps
    label i to line i of object_names.txt). A label named as another class is a different order: an error."""
    if sorted(id2label) != list(range(len(names))):
        raise DetectorError(
            f"the detector has {len(id2label)} labels; GenEval needs a COCO instance model with {len(names)} "
            f"(labels 0-{len(names) - 1}, COCO's order)"
        )
    known = {}
    for i, name in enumerate(names):
        known[name] = i
        known[COCO_NAMES.get(name, name)] = i
    for i in range(len(names)):
        label = re.sub(r"[\s_-]+", " ", str(id2label[i])).strip().lower()
        if known.get(label, i) != i:
            raise DetectorError(
                f"the detector's label {i} is {id2label[i]!r}, where GenEval's label {i} is {names[i]!r}: "
                "not COCO's classes in COCO's order"
            )


# -- colour ---------------------------------------------------------------------------------------------------


def masked_crop(image: Image.Image, mask: np.ndarray | None, box: Sequence[float]) -> Image.Image:
    """The official ImageCrops view: the image where the mask is set, #999 grey elsewhere, cropped to the box
    (PIL rounds a float box, as it did for the official `crop(box[:4])`). No mask: the plain crop."""
    image = image.convert("RGB")
    if mask is not None:
        if mask.shape != (image.height, image.width):
            raise DetectorError(f"a mask of shape {mask.shape} for an image of {image.width}x{image.height}")
        blank = Image.new("RGB", image.size, BACKGROUND)
        image = Image.composite(image, blank, Image.fromarray(mask.astype(bool)))
    return image.crop(tuple(float(v) for v in box))


def clip_view(image: Image.Image, size: int) -> Image.Image:
    """open_clip's eval transform before ToTensor: Resize(size, bicubic) of the short side (torchvision on a PIL
    image: the long side truncated), then CenterCrop(size) with torchvision's rounding of the offsets."""
    w, h = image.size
    if w == 0 or h == 0:
        raise DetectorError("cannot name the colour of an empty crop (a detection without pixels)")
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_long = int(size * long / short)
        image = image.resize((size, new_long) if w <= h else (new_long, size), Image.Resampling.BICUBIC)
        w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def color_prompts(classname: str) -> list[list[str]]:
    """Per colour (GenEval's ten, in order), the three official texts for an object of this class."""
    return [[t.format(c=c, classname=classname) for t in COLOR_TEMPLATES] for c in COLOR_NAMES]


class ClipColors:
    """CLIP zero-shot colour naming, as the official code runs clip_benchmark over open_clip's ViT-L/14."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model, processor, device
        self.size = int(model.config.vision_config.image_size)
        self._classifiers: dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, source: str = CLIP_MODEL, device: str = "cpu") -> ClipColors:
        from transformers import CLIPModel, CLIPProcessor

        source = _resolve(source, "CLIP model")
        _check_model_type(source, "clip", "CLIP model")
        try:
            processor = CLIPProcessor.from_pretrained(source)
            model, info = CLIPModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        except Exception as error:
            raise DetectorError(f"cannot load the CLIP model from {source}: {_first_line(error)}") from error
        _check_loading(info, source, "CLIP model")
        return cls(model.to(device).eval(), processor, device)

    @torch.inference_mode()
    def classifier(self, classname: str) -> torch.Tensor:
        """[D, 10]: per colour, the template embeddings normalised, averaged, normalised (cached per class)."""
        if classname not in self._classifiers:
            texts = [text for group in color_prompts(classname) for text in group]
            tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            features = self.model.get_text_features(**tokens).pooler_output  # [10 * 3, D]
            weights = F.normalize(features, dim=-1).view(len(COLOR_NAMES), len(COLOR_TEMPLATES), -1).mean(dim=1)
            self._classifiers[classname] = F.normalize(weights, dim=-1).T  # [D, 10]
        return self._classifiers[classname]

    @torch.inference_mode()
    def logits(self, crops: Sequence[Image.Image], classname: str) -> torch.Tensor:
        """[N, 10]: 100 x cosine between each crop and each colour of this class (clip_benchmark's logits)."""
        classifier = self.classifier(classname)
        out = []
        for start in range(0, len(crops), CLIP_BATCH):
            views = [clip_view(crop, self.size) for crop in crops[start : start + CLIP_BATCH]]
            # the views are the model's size already: the processor only rescales and normalises
            pixels = self.processor.image_processor(
                images=views, do_resize=False, do_center_crop=False, return_tensors="pt"
            )["pixel_values"].to(self.device)  # [n, 3, size, size]
            features = F.normalize(self.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            out.append(100.0 * features @ classifier)  # [n, 10]
        return torch.cat(out).float().cpu()

    def __call__(self, crops: Sequence[Image.Image], classname: str) -> list[str]:
        if not crops:
            return []
        return [COLOR_NAMES[i] for i in self.logits(crops, classname).argmax(dim=1).tolist()]


# -- the detector ---------------------------------------------------------------------------------------------


class Mask2FormerDetector:
    """A Detector (thinkdraw.evaluator.detection) over a transformers Mask2Former and CLIP: GenEval's 80 classes."""

    def __init__(self, model, image_processor, colors: ClipColors | None, device: str = "cpu", test_scale=TEST_SCALE):
        """test_scale: (short side, long side at most) the image is resized to; None keeps the processor's.
        colors None: a detector that only finds objects (T2I-CompBench's rules name no colours)."""
        self.classes = geneval_classes()
        check_labels({int(k): v for k, v in model.config.id2label.items()}, self.classes)
        self.model, self.image_processor, self.color_namer = model, image_processor, colors
        self.device, self.test_scale = device, test_scale

    @classmethod
    def load(
        cls,
        detector_model: str = MASK2FORMER_MODEL,
        clip_model: str | None = CLIP_MODEL,
        device: str = "cpu",
        test_scale=TEST_SCALE,
    ) -> Mask2FormerDetector:
        """Hub ids or local folders (saved with save_pretrained, processor included); every weight must be there.
        clip_model None loads no CLIP: detect() only."""
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        source = _resolve(detector_model, "detector")
        _check_model_type(source, "mask2former", "detector")
        try:
            # the PIL backend whether or not torchvision is installed: the same resize everywhere
            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
            model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
                source, dtype=torch.float32, output_loading_info=True
            )
        except Exception as error:
            raise DetectorError(f"cannot load the detector from {source}: {_first_line(error)}") from error
        _check_loading(info, source, "detector")
        colors = ClipColors.load(clip_model, device) if clip_model is not None else None
        return cls(model.to(device).eval(), image_processor, colors, device, test_scale)

    @torch.inference_mode()
    def detect(self, image: Image.Image) -> list[Detection]:
        image = image.convert("RGB")
        kwargs = {}
        if self.test_scale is not None:
            kwargs["size"] = {"shortest_edge": self.test_scale[0], "longest_edge": self.test_scale[1]}
        inputs = self.image_processor(images=image, return_tensors="pt", **kwargs).to(self.device)
        outputs = self.model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        valid = inputs["pixel_mask"][0].bool()  # [H_in, W_in]: where the resized image lies
        valid_size = (int(valid.any(dim=1).sum()), int(valid.any(dim=0).sum()))
        labels, queries, scores, masks = instance_results(
            outputs.class_queries_logits[0].float(),
            outputs.masks_queries_logits[0].float(),
            tuple(inputs["pixel_values"].shape[-2:]),
            valid_size,
            (image.height, image.width),
        )
        boxes = mask_boxes(masks).tolist()  # [Q, 4], per query
        query_masks = list(masks.cpu().numpy())  # Q arrays [H, W]: the pairs of one query share its mask
        return [
            Detection(self.classes[label], tuple(boxes[q]), score, mask=query_masks[q])
            for label, q, score in zip(labels.tolist(), queries.tolist(), scores.tolist(), strict=True)
        ]

    def colors(self, image: Image.Image, detections: list[Detection]) -> list[str]:
        """The colour of each detection (its masked crop through CLIP, with its class's templates)."""
        if self.color_namer is None:
            raise DetectorError("this Mask2Former detector was loaded without a CLIP model: it names no colours")
        image = image.convert("RGB")
        named: list[str | None] = [None] * len(detections)
        for label in dict.fromkeys(d.label for d in detections):
            idx = [i for i, d in enumerate(detections) if d.label == label]
            crops = [masked_crop(image, detections[i].mask, detections[i].box) for i in idx]
            for i, color in zip(idx, self.color_namer(crops, label), strict=True):
                named[i] = color
        return named  # type: ignore[return-value]


# -- loading --------------------------------------------------------------------------------------------------


def _resolve(source: str, what: str) -> str:
    """A local folder (checked here, so a typo is not tried as a hub id) or a hub id, left to transformers."""
    source = str(source)
    local = Path(source).expanduser()
    if local.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", source) or source.startswith("."):
        if not local.is_dir():
            raise DetectorError(f"no {what} folder at {source}")
        if not (local / "config.json").is_file():
            raise DetectorError(f"{source} has no config.json: not a saved {what}")
        return str(local)
    return source


def _check_model_type(source: str, model_type: str, what: str) -> None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as error:
        hint = "" if Path(source).is_dir() else " (a hub id needs the network, or its files in the Hugging Face cache)"
        raise DetectorError(f"cannot read the {what}'s config from {source}: {_first_line(error)}{hint}") from error
    if config.model_type != model_type:
        raise DetectorError(f"{source} holds a {config.model_type!r} model, not a {model_type!r} one")


def _check_loading(info: dict, source: str, what: str) -> None:
    # transformers fills missing or misshapen weights with random ones and only warns: refuse them
    for kind in ("missing_keys", "mismatched_keys"):
        if keys := sorted(info.get(kind) or [], key=str):
            raise DetectorError(
                f"the {what} at {source} does not match its config: {kind.replace('_', ' ')} {keys[:3]}"
            )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
